import type Redis from 'ioredis';
import { type EventOf, LuaScript, type OpsAlert } from '@tollgate/shared';
import { z } from 'zod';
import { type AlertLog, fingerprintOf, newAlertId } from './alert-log';
import COUNT_ERROR_LUA from './count-error-1.lua';
import SET_CIRCUIT_LUA from './set-circuit-1.lua';

// The newest circuit state per breaker, and errors per service and category in a sliding window.
const SET_CIRCUIT = new LuaScript(SET_CIRCUIT_LUA);
const COUNT_ERROR = new LuaScript(COUNT_ERROR_LUA);

const circuitSchema = z.object({
  state: z.enum(['open', 'closed']),
  at: z.number(),
  provider: z.string(),
  operation: z.string(),
  reason: z.string(),
});
type CircuitState = z.infer<typeof circuitSchema>;

export interface OpsAlertsDeps {
  redis: Redis;
  log: AlertLog;
  circuitOpenSeconds: number;
  errorRateThreshold: number;
  errorWindowMs: number;
  now: () => number;
}

const circuitFingerprint = (breaker: string) => fingerprintOf('ops', 'circuit_open', breaker);
const errorFingerprint = (service: string, category: string) => fingerprintOf('ops', 'error_rate', service, category);

/**
 * The `escalate` strategy: a provider circuit that stays open and an error rate per service and
 * category above the configured level become alerts, with the same once-per-crossing lifecycle as
 * budget alerts. Their state lives in Redis, so any instance can fire or resolve them.
 */
export class OpsAlerts {
  private readonly keys;

  constructor(private readonly deps: OpsAlertsDeps) {
    this.keys = deps.log.keys;
  }

  async onCircuit(event: EventOf<'circuit.opened'> | EventOf<'circuit.closed'>): Promise<void> {
    const d = event.data;
    const at = Date.parse(event.occurred_at);
    const state: CircuitState = {
      state: event.type === 'circuit.opened' ? 'open' : 'closed',
      at,
      provider: d.provider,
      operation: d.operation,
      reason: d.reason.slice(0, 300),
    };
    await SET_CIRCUIT.run(this.deps.redis, [this.keys.circuits], [d.breaker, at, JSON.stringify(state)]);
    if (state.state === 'closed') {
      const current = await this.deps.log.current(circuitFingerprint(d.breaker));
      if (current?.kind === 'ops' && current.state === 'firing') await this.resolveOne(current, 'circuit_closed', `Circuit ${d.breaker} closed again.`);
    }
  }

  async onError(event: EventOf<'error.occurred'>): Promise<void> {
    const { service, category } = event.data;
    const now = this.deps.now();
    const count = Number(
      await COUNT_ERROR.run(
        this.deps.redis,
        [this.keys.errors(service, category)],
        [Date.parse(event.occurred_at), event.id, now - this.deps.errorWindowMs, this.deps.errorWindowMs * 2],
      ),
    );
    if (count < this.deps.errorRateThreshold) return;
    const minutes = this.deps.errorWindowMs / 60_000;
    await this.deps.log.fire(
      {
        kind: 'ops',
        alert_id: newAlertId(),
        fingerprint: errorFingerprint(service, category),
        state: 'firing',
        alert: 'error_rate',
        labels: { service, category },
        value: count,
        threshold: this.deps.errorRateThreshold,
        strategy: 'escalate',
        summary: `${service}: ${count} ${category} errors in the last ${minutes} min (alert at ${this.deps.errorRateThreshold}).`,
        fired_at: new Date(now).toISOString(),
      },
      now,
    );
  }

  /** Fires for circuits open longer than the limit; an already firing one is left alone. */
  async checkCircuits(firing: ReadonlySet<string>): Promise<number> {
    const now = this.deps.now();
    const all = await this.deps.redis.hgetall(this.keys.circuits);
    let fired = 0;
    for (const [breaker, raw] of Object.entries(all)) {
      const c = parseCircuit(raw);
      if (!c || c.state !== 'open') continue;
      const openSeconds = Math.floor((now - c.at) / 1000);
      const fp = circuitFingerprint(breaker);
      if (openSeconds < this.deps.circuitOpenSeconds || firing.has(fp)) continue;
      const id = await this.deps.log.fire(
        {
          kind: 'ops',
          alert_id: newAlertId(),
          fingerprint: fp,
          state: 'firing',
          alert: 'circuit_open',
          labels: { breaker, provider: c.provider, operation: c.operation },
          value: openSeconds,
          threshold: this.deps.circuitOpenSeconds,
          strategy: 'escalate',
          summary: `Circuit ${breaker} (${c.provider} ${c.operation}) has been open for ${openSeconds}s: ${c.reason}`,
          fired_at: new Date(now).toISOString(),
        },
        now,
      );
      if (id) fired++;
    }
    return fired;
  }

  /** Resolves circuit alerts whose circuit closed and error-rate alerts whose rate fell below half the level. */
  async resolveStale(alerts: OpsAlert[]): Promise<number> {
    let resolved = 0;
    const now = this.deps.now();
    for (const a of alerts) {
      if (a.alert === 'circuit_open') {
        const breaker = a.labels.breaker ?? '';
        const c = parseCircuit((await this.deps.redis.hget(this.keys.circuits, breaker)) ?? '');
        if (c?.state === 'open') continue;
        if (await this.resolveOne(a, 'circuit_closed', `Circuit ${breaker} closed again.`)) resolved++;
      } else {
        const key = this.keys.errors(a.labels.service ?? '', a.labels.category ?? '');
        await this.deps.redis.zremrangebyscore(key, '-inf', now - this.deps.errorWindowMs);
        const count = await this.deps.redis.zcard(key);
        // Half the firing level: a rate hovering around the threshold must not flap.
        if (count * 2 >= this.deps.errorRateThreshold) continue;
        if (await this.resolveOne({ ...a, value: count }, 'rate_recovered', `${a.labels.service}: ${a.labels.category} errors are down to ${count} per window.`)) resolved++;
      }
    }
    return resolved;
  }

  private async resolveOne(a: OpsAlert, reason: NonNullable<OpsAlert['resolve_reason']>, summary: string): Promise<boolean> {
    const now = this.deps.now();
    const resolved: OpsAlert = { ...a, state: 'resolved', summary, resolved_at: new Date(now).toISOString(), resolve_reason: reason };
    return (await this.deps.log.resolve(resolved, now)) !== null;
  }
}

function parseCircuit(raw: string): CircuitState | null {
  try {
    const parsed = circuitSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
