import type Redis from 'ioredis';
import type { BudgetPeriod, BudgetScope } from '../errors/tollgate-error';
import { keyspace } from '../keys';
import { LuaScript } from '../lua';
import { PERIODS, type PeriodKeys } from '../time/periods';
import FINISH_HOLD from './finish-hold-2.lua';
import SWEEP_HOLDS from './sweep-holds-1.lua';

/**
 * Budget holds: the worst-case cost of a paid request, reserved at admission on every hard budget
 * that covers the caller and settled by the ledger script that records the call (see
 * release-hold.lua). Held amounts are counted per period in hashes laid out like the ledger's
 * running totals (`total`, `user:{id}`, `project:{id}`), so admission compares
 * `spent + held + worst case` field against field.
 */
export function holdKeys(namespace: string) {
  const k = keyspace(namespace);
  return {
    /** One request's hold (hash: amt, cells, settled, expect). */
    hold: (holdId: string) => k('hold', holdId),
    holdPrefix: `${k('hold')}:`,
    /** Micros held per scope in one period, as a hash shaped like the ledger's totals. */
    held: (period: BudgetPeriod, periodKey: string) => k('held', period, periodKey),
    /** Hold ids by expiry (epoch ms). */
    expiry: k('holds', 'expiry'),
  };
}
export type HoldKeys = ReturnType<typeof holdKeys>;

/** The field of a scope in the ledger's running totals and in the held hashes. */
export function scopeField(scope: BudgetScope, scopeId: string): string {
  return scope === 'global' ? 'total' : `${scope}:${scopeId}`;
}

/** Holds of dead requests are given back this long after their deadline. */
export const HOLD_MARGIN_MS = 30_000;
/** A finished run whose billed calls the ledger has yet to settle keeps its hold at most this long. */
export const HOLD_BACKSTOP_MS = 15 * 60_000;

const finishScript = new LuaScript(FINISH_HOLD);
const sweepScript = new LuaScript(SWEEP_HOLDS);

/**
 * Called by a worker when a run ends, with the number of usage events it published: a run that
 * billed nothing gives its hold back at once; otherwise the ledger gives back the rest when it has
 * settled that many entries.
 */
export async function finishHold(redis: Redis, namespace: string, holdId: string, billedCalls: number, now = Date.now()): Promise<number> {
  const k = holdKeys(namespace);
  return Number(await finishScript.run(redis, [k.hold(holdId), k.expiry], [holdId, billedCalls, now + HOLD_BACKSTOP_MS]));
}

/** Gives back the holds of requests that died; returns how many expired. */
export async function sweepHolds(redis: Redis, namespace: string, now = Date.now(), max = 100): Promise<number> {
  const k = holdKeys(namespace);
  return Number(await sweepScript.run(redis, [k.expiry], [now, max, k.holdPrefix]));
}

/** Micros held right now for one scope, per period. */
export async function heldMicros(redis: Redis, namespace: string, scope: BudgetScope, scopeId: string, periods: PeriodKeys): Promise<Record<BudgetPeriod, number>> {
  const k = holdKeys(namespace);
  const field = scopeField(scope, scopeId);
  const pipe = redis.pipeline();
  for (const p of PERIODS) pipe.hget(k.held(p, periods[p]), field);
  const res = (await pipe.exec()) ?? [];
  return Object.fromEntries(PERIODS.map((p, i) => [p, Math.max(0, Number(res[i]?.[1] ?? 0))])) as Record<BudgetPeriod, number>;
}
