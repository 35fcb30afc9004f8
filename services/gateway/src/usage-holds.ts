import { createHash } from 'node:crypto';
import type Redis from 'ioredis';
import { keyspace, LuaScript } from '@tollgate/shared';
import { z } from 'zod';
import TAKE_OVER_LUA from './take-over-claim-1.lua';

const TAKE_OVER = new LuaScript(TAKE_OVER_LUA);

/**
 * What the gateway remembers about an external-usage hold beyond the budget hold itself (which
 * the ledger deletes when it settles): whose it is, for what, and whether a report or a release
 * has claimed it. The claim is one SET NX shared by reports and releases, so a hold is settled by
 * exactly one report, or released, never both.
 */
export const holdRecordSchema = z.object({
  hold_id: z.string(),
  user_id: z.string(),
  project_id: z.string(),
  operation: z.string(),
  calls: z.number().int(),
  units: z.number().int(),
  worst_micros: z.number().int(),
  /** False when no hard budget covers the caller (or the worst case is 0): nothing is reserved. */
  held: z.boolean(),
  expires_at: z.number().int(),
  price_version: z.string(),
  /** When the hold was priced (epoch ms): its report is priced at the same instant, so a price version taking effect meanwhile cannot make it dearer than what was held. */
  priced_at: z.number().int().optional(),
  /** The journey the hold was asked for in (checked at admission), which its report's entry carries. */
  journey: z.string().optional(),
  journey_step: z.string().optional(),
});
export type HoldRecord = z.infer<typeof holdRecordSchema>;

/** A claimed report slot: in progress, done (with the answer a retry gets again), or a released hold. */
const claimSchema = z.union([
  // `nonce` names this use of the slot in the event id (a key reused after its slot expired is a
  // new report); `at` lets a retry take over a claim whose gateway died before finishing it.
  z.object({ state: z.literal('pending'), fingerprint: z.string(), nonce: z.string(), at: z.number().int() }),
  z.object({ state: z.literal('done'), fingerprint: z.string(), response: z.record(z.string(), z.unknown()) }),
  z.object({ state: z.literal('released') }),
]);
export type Claim = z.infer<typeof claimSchema>;

/** Records outlive their hold by this much, so a late report or release still finds its owner. */
const RECORD_GRACE_MS = 24 * 3_600_000;
/** How long an `Idempotency-Key` is remembered. */
export const IDEMPOTENCY_TTL_MS = 24 * 3_600_000;
/**
 * A report still pending after this long lost its gateway between claim and answer: a retry
 * takes the claim over with the same nonce, so it publishes the same event id (the ledger counts
 * it once if the first publish got through) instead of being refused until the slot expires.
 */
export const PENDING_STALE_MS = 30_000;

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

export class UsageHoldStore {
  private readonly k: (...parts: string[]) => string;
  constructor(
    private readonly redis: Redis,
    namespace: string,
  ) {
    this.k = keyspace(namespace);
  }

  async put(record: HoldRecord): Promise<void> {
    await this.redis.set(this.k('usage-hold', record.hold_id), JSON.stringify(record), 'PX', Math.max(1, record.expires_at - Date.now()) + RECORD_GRACE_MS);
  }

  async get(holdId: string): Promise<HoldRecord | undefined> {
    const raw = await this.redis.get(this.k('usage-hold', holdId));
    return raw ? holdRecordSchema.parse(JSON.parse(raw)) : undefined;
  }

  /** The report slot of a hold, or of an idempotency key within one tenant. */
  slotFor(id: { hold_id: string } | { user_id: string; project_id: string; idempotency_key: string }): string {
    return 'hold_id' in id
      ? this.k('usage-report', 'hold', id.hold_id)
      : this.k('usage-report', 'idem', sha(`${id.user_id}\n${id.project_id}\n${id.idempotency_key}`));
  }

  /** The usage event id of one use of a slot: a retry publishes the same id, so the ledger counts it once. */
  eventIdFor(slot: string, nonce: string): string {
    return `usage_${sha(`${slot}\n${nonce}`).slice(0, 40)}`;
  }

  /** Replaces a stale pending claim with a fresh one under the same nonce, if it is still that claim. */
  async takeOver(slot: string, stale: Extract<Claim, { state: 'pending' }>, ttlMs: number): Promise<Extract<Claim, { state: 'pending' }> | undefined> {
    const fresh = { ...stale, at: Date.now() };
    const ok = await TAKE_OVER.run(this.redis, [slot], [stale.nonce, String(stale.at), JSON.stringify(fresh), ttlMs]);
    return ok === 1 ? fresh : undefined;
  }

  /** Claims a slot; returns the existing claim when another got there first. */
  async claim(slot: string, claim: Claim, ttlMs: number): Promise<Claim | undefined> {
    const ok = await this.redis.set(slot, JSON.stringify(claim), 'PX', ttlMs, 'NX');
    if (ok === 'OK') return undefined;
    const raw = await this.redis.get(slot);
    // Gone between the two calls (it expired or a failed report gave it back): claim again.
    if (raw === null) return this.claim(slot, claim, ttlMs);
    return claimSchema.parse(JSON.parse(raw));
  }

  async complete(slot: string, claim: Claim, ttlMs: number): Promise<void> {
    await this.redis.set(slot, JSON.stringify(claim), 'PX', ttlMs);
  }

  async unclaim(slot: string): Promise<void> {
    await this.redis.del(slot);
  }
}

/** A canonical digest of what a report says, to tell a retry from a different report under the same key. */
export function reportFingerprint(r: { operation: string; units: number; calls: number; hold_id?: string | undefined }): string {
  return sha(JSON.stringify([r.operation, r.units, r.calls, r.hold_id ?? null]));
}
