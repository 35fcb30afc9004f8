import { createHash, randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { type AlertRecord, alertingKeys, alertRecordSchema, alertScopeOf, LuaScript, Silences } from '@tollgate/shared';

/**
 * The notification log. Every transition of an alert (fire, resolve) happens in one Lua script
 * that checks the current state, writes the record and the history index, and appends the
 * notice to the alerts stream: a notice is on the stream exactly when the transition happened,
 * so neither a second instance nor a redelivered event nor a restart can send it again.
 */

// Writes the record, appends the notice to the stream and indexes the alert by the notice's stream
// id (milliseconds, then sequence), so the history lists alerts in exactly the order they were sent.
const NOTIFY = `
local function notify(kRecord, kIndex, kScopeIndex, kStream, alertId, json, maxlen, ttl, kind, state, scope, scopeId)
  if tonumber(ttl) > 0 then redis.call('SET', kRecord, json, 'PX', ttl) else redis.call('SET', kRecord, json) end
  local id = redis.call('XADD', kStream, 'MAXLEN', '~', maxlen, '*',
    'kind', kind, 'state', state, 'scope', scope, 'scope_id', scopeId, 'alert_id', alertId, 'alert', json)
  local dash = string.find(id, '-', 1, true)
  local score = tonumber(string.sub(id, 1, dash - 1)) + math.min(tonumber(string.sub(id, dash + 1)), 999) / 1000
  redis.call('ZADD', kIndex, score, alertId)
  redis.call('ZADD', kScopeIndex, score, alertId)
  if redis.call('ZCARD', kIndex) > 10000 then redis.call('ZREMRANGEBYRANK', kIndex, 0, -10001) end
  if redis.call('ZCARD', kScopeIndex) > 2000 then redis.call('ZREMRANGEBYRANK', kScopeIndex, 0, -2001) end
  return id
end
`;

// One budget window (scope, period, period key). Applies only if neither the budget (revision)
// nor the window (highest threshold handled) changed since they were read; otherwise the caller
// re-reads and decides again. Sets the hard-budget block, and fires the highest crossed
// threshold: lower thresholds crossed by the same jump are inhibited by moving the window past them.
// Returns {0} on a conflict, {1} when applied without a notice, {2, stream id} when it fired.
const APPLY_COST_WINDOW = new LuaScript(`${NOTIFY}
local rev = redis.call('GET', KEYS[1]) or '0'
local hi = redis.call('HGET', KEYS[2], 'hi') or '0'
if rev ~= ARGV[1] or hi ~= ARGV[2] then return {0} end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'PXAT', ARGV[5]) end
if ARGV[7] == '0' then return {1} end
redis.call('HSET', KEYS[2], 'hi', ARGV[7])
redis.call('PEXPIREAT', KEYS[2], ARGV[6])
if redis.call('HGET', KEYS[4], 'state') == 'firing' then return {1} end
redis.call('HSET', KEYS[4], 'alert_id', ARGV[8], 'state', 'firing')
redis.call('PERSIST', KEYS[4])
redis.call('SADD', KEYS[8], ARGV[15])
local id = notify(KEYS[5], KEYS[6], KEYS[7], KEYS[9], ARGV[8], ARGV[9], ARGV[11], 0, 'cost', 'firing', ARGV[13], ARGV[14])
return {2, id}
`);

// Fires unless the fingerprint is already firing. Returns the stream id, or false.
const FIRE = new LuaScript(`${NOTIFY}
if redis.call('HGET', KEYS[1], 'state') == 'firing' then return false end
redis.call('HSET', KEYS[1], 'alert_id', ARGV[1], 'state', 'firing')
redis.call('PERSIST', KEYS[1])
redis.call('SADD', KEYS[5], ARGV[8])
return notify(KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[1], ARGV[2], ARGV[4], 0, ARGV[5], 'firing', ARGV[6], ARGV[7])
`);

// Resolves this firing of the fingerprint (and no other). A budget window can be moved back so
// thresholds the new budget no longer reaches fire again when they are crossed again.
// Returns the stream id, or false when it was not firing (already resolved by someone else).
const RESOLVE = new LuaScript(`${NOTIFY}
if redis.call('HGET', KEYS[1], 'alert_id') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'firing' then return false end
redis.call('HSET', KEYS[1], 'state', 'resolved')
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('SREM', KEYS[5], ARGV[8])
if ARGV[9] ~= '' then
  local hi = tonumber(redis.call('HGET', KEYS[7], 'hi') or '0')
  if hi > tonumber(ARGV[9]) then redis.call('HSET', KEYS[7], 'hi', ARGV[9]) end
end
return notify(KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[1], ARGV[2], ARGV[4], ARGV[10], ARGV[5], 'resolved', ARGV[6], ARGV[7])
`);

/** Alertmanager-style identity of an alert: a hash of its labels, stable across instances and restarts. */
export function fingerprintOf(...labels: Array<string | number>): string {
  return createHash('sha256').update(labels.join('\u001f')).digest('hex').slice(0, 32);
}

export function newAlertId(): string {
  return `alrt_${randomUUID().replace(/-/g, '').slice(0, 20)}`;
}

export interface CostWindowChange {
  scope: 'global' | 'user' | 'project';
  scopeId: string;
  period: 'day' | 'week' | 'month';
  periodKey: string;
  /** What was read, for the compare-and-set. */
  expectedRevision: string;
  expectedHi: string;
  block?: { value: string; untilMs: number };
  windowExpireAtMs: number;
  /** The threshold to fire, with its record. */
  fire?: { threshold: number; alert: AlertRecord & { kind: 'cost' } };
}

export type CostWindowResult = { outcome: 'conflict' } | { outcome: 'applied' } | { outcome: 'fired'; streamId: string };

export class AlertLog {
  readonly keys: ReturnType<typeof alertingKeys>;
  private readonly firingCache = new Map<string, AlertRecord>();
  private readonly silences: Silences;

  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly opts: { streamMaxLen: number; retentionMs: number },
  ) {
    this.keys = alertingKeys(namespace);
    this.silences = new Silences(redis, namespace);
  }

  /** Marks a notice a silence covers; a resolution stays as quiet as its firing was. */
  private async withSilence<A extends AlertRecord>(alert: A, now: number): Promise<A> {
    const silencedBy = alert.silenced_by ?? (await this.silences.match(alert, now));
    return silencedBy ? { ...alert, silenced_by: silencedBy } : alert;
  }

  async applyCostWindow(c: CostWindowChange, now: number): Promise<CostWindowResult> {
    const k = this.keys;
    const alert = c.fire && (await this.withSilence(c.fire.alert, now));
    const res = (await APPLY_COST_WINDOW.run(
      this.redis,
      [
        k.budgetRevision(c.scope, c.scopeId),
        k.window(c.scope, c.scopeId, c.period, c.periodKey),
        k.block(c.scope, c.scopeId, c.period),
        k.fingerprint(alert?.fingerprint ?? '-'),
        k.alert(alert?.alert_id ?? '-'),
        k.alertIndex,
        k.alertScopeIndex(c.scope, c.scopeId),
        k.firing,
        k.alertsStream,
      ],
      [
        c.expectedRevision,
        c.expectedHi,
        c.block ? '1' : '0',
        c.block?.value ?? '',
        c.block?.untilMs ?? 0,
        c.windowExpireAtMs,
        c.fire?.threshold ?? 0,
        alert?.alert_id ?? '',
        alert ? JSON.stringify(alert) : '',
        now,
        this.opts.streamMaxLen,
        'cost',
        c.scope,
        c.scopeId,
        alert?.fingerprint ?? '',
      ],
    )) as [number, string?];
    if (res[0] === 0) return { outcome: 'conflict' };
    if (res[0] === 2 && res[1]) return { outcome: 'fired', streamId: res[1] };
    return { outcome: 'applied' };
  }

  /** Fires unless the fingerprint is already firing; the stream id when it fired. */
  async fire(firing: AlertRecord, now: number): Promise<string | null> {
    const k = this.keys;
    const alert = await this.withSilence(firing, now);
    const where = alertScopeOf(alert);
    const res = await FIRE.run(
      this.redis,
      [k.fingerprint(alert.fingerprint), k.alert(alert.alert_id), k.alertIndex, k.alertScopeIndex(where.scope, where.scope_id), k.firing, k.alertsStream],
      [alert.alert_id, JSON.stringify(alert), now, this.opts.streamMaxLen, alert.kind, where.scope, where.scope_id, alert.fingerprint],
    );
    return typeof res === 'string' ? res : null;
  }

  /**
   * Resolves one firing; `windowKey` and `newHi` move a budget window back. Returns the stream id,
   * or null when that firing was already resolved (by another instance, say).
   */
  async resolve(resolution: AlertRecord, now: number, window?: { key: string; newHi: number }): Promise<string | null> {
    const k = this.keys;
    const resolved = await this.withSilence(resolution, now);
    const where = alertScopeOf(resolved);
    const res = await RESOLVE.run(
      this.redis,
      [
        k.fingerprint(resolved.fingerprint),
        k.alert(resolved.alert_id),
        k.alertIndex,
        k.alertScopeIndex(where.scope, where.scope_id),
        k.firing,
        k.alertsStream,
        window?.key ?? k.fingerprint(resolved.fingerprint),
      ],
      [
        resolved.alert_id,
        JSON.stringify(resolved),
        now,
        this.opts.streamMaxLen,
        resolved.kind,
        where.scope,
        where.scope_id,
        resolved.fingerprint,
        window ? window.newHi : '',
        this.opts.retentionMs,
      ],
    );
    return typeof res === 'string' ? res : null;
  }

  /** Fingerprints firing now. */
  firingFingerprints(): Promise<string[]> {
    return this.redis.smembers(this.keys.firing);
  }

  /**
   * The alerts firing now, as recorded. A firing record never changes until it resolves (which
   * writes a new record under the same id, no longer firing), so parsed records are cached by id.
   */
  async firing(): Promise<AlertRecord[]> {
    const fps = await this.firingFingerprints();
    if (fps.length === 0) {
      this.firingCache.clear();
      return [];
    }
    const pipe = this.redis.pipeline();
    for (const fp of fps) pipe.hget(this.keys.fingerprint(fp), 'alert_id');
    const ids = ((await pipe.exec()) ?? []).map(([, v]) => v).filter((v): v is string => typeof v === 'string');
    const missing = ids.filter((id) => !this.firingCache.has(id));
    if (missing.length > 0) {
      const raws = await this.redis.mget(missing.map((id) => this.keys.alert(id)));
      missing.forEach((id, i) => {
        const parsed = raws[i] ? parseRecord(raws[i]!) : null;
        if (parsed?.state === 'firing') this.firingCache.set(id, parsed);
      });
    }
    const live = new Set(ids);
    for (const id of this.firingCache.keys()) if (!live.has(id)) this.firingCache.delete(id);
    return ids.flatMap((id) => this.firingCache.get(id) ?? []);
  }

  async current(fingerprint: string): Promise<AlertRecord | null> {
    const id = await this.redis.hget(this.keys.fingerprint(fingerprint), 'alert_id');
    if (!id) return null;
    const raw = await this.redis.get(this.keys.alert(id));
    return raw ? parseRecord(raw) : null;
  }
}

function parseRecord(raw: string): AlertRecord | null {
  try {
    const parsed = alertRecordSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
