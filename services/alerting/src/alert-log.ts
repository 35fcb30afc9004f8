import { createHash, randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { type AlertRecord, alertingKeys, alertRecordSchema, alertScopeOf, LuaScript, Silences } from '@tollgate/shared';
import APPLY_COST_WINDOW_LUA from './apply-cost-window-9.lua';
import FIRE_ALERT_LUA from './fire-alert-6.lua';
import RESOLVE_ALERT_LUA from './resolve-alert-7.lua';

/**
 * The notification log. Every transition of an alert (fire, resolve) happens in one Lua script
 * that checks the current state, writes the record and the history index, and appends the
 * notice to the alerts stream: a notice is on the stream exactly when the transition happened,
 * so neither a second instance nor a redelivered event nor a restart can send it again.
 */

// Each transition checks the state and notifies in one script (see each script's header); all three
// include notify.lua, which writes the record, the stream notice and the history index.
const APPLY_COST_WINDOW = new LuaScript(APPLY_COST_WINDOW_LUA);
const FIRE = new LuaScript(FIRE_ALERT_LUA);
const RESOLVE = new LuaScript(RESOLVE_ALERT_LUA);

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
