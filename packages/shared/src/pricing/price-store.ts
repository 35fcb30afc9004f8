import type Redis from 'ioredis';
import { z } from 'zod';
import { TollgateError } from '../errors/tollgate-error';
import { keyspace } from '../keys';
import { buildPriceTable, ModelPriceSchema, type PriceTable, type PriceTableVersion, PriceTableVersionSchema } from './price-table';

/** How often every service re-reads the price versions written through the API. */
export const PRICE_POLL_MS = 2_000;
/**
 * A version written through the API takes effect no sooner than this: every service has re-read
 * it by then, so a hold and the ledger entry that settles it are priced from the same list.
 */
export const PRICE_LEAD_MS = 60_000;

export class PriceConflictError extends TollgateError {
  constructor(message: string) {
    super('conflict', message);
  }
}

/** A version as an admin writes it: complete, or `extends` an existing one and lists only what changes. */
export const priceVersionInputSchema = z.strictObject({
  effective_from: z.iso.datetime({ error: 'effective_from must be an ISO date-time in UTC, e.g. 2026-12-10T00:00:00Z' }),
  extends: z.string().min(1).max(64).optional(),
  models: z.record(z.string(), ModelPriceSchema),
});
export type PriceVersionInput = z.infer<typeof priceVersionInputSchema>;

/**
 * Price versions written through the admin API, kept in Redis beside the seed and the
 * PRICE_TABLE_FILE versions. Every version stays complete (an `extends` is resolved when it is
 * written), so a ledger entry's `price_version` alone still reproduces its amount.
 */
export class PriceStore {
  private readonly versionsKey: string;
  private readonly revKey: string;
  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly leadMs = PRICE_LEAD_MS,
  ) {
    const k = keyspace(namespace);
    this.versionsKey = k('prices', 'versions');
    this.revKey = k('prices', 'rev');
  }

  async rev(): Promise<number> {
    return Number((await this.redis.get(this.revKey)) ?? 0);
  }

  async versions(): Promise<PriceTableVersion[]> {
    const all = await this.redis.hvals(this.versionsKey);
    return all.map((raw) => PriceTableVersionSchema.parse(JSON.parse(raw)));
  }

  /**
   * Adds (or replaces, while it is not yet in effect) one version. `base` is the table it joins
   * (seed and file versions); the result must build, so ids and dates stay unique.
   */
  async put(id: string, input: PriceVersionInput, base: PriceTable, now = Date.now()): Promise<{ version: PriceTableVersion; created: boolean }> {
    const at = Date.parse(input.effective_from);
    if (at < now + this.leadMs) {
      throw new TollgateError('invalid_request', `effective_from must be at least ${Math.ceil(this.leadMs / 1000)} s from now, so every service has the version before it applies.`);
    }
    const stored = await this.versions();
    const existing = stored.find((v) => v.version === id);
    if (base.versions.some((v) => v.version === id)) throw new PriceConflictError(`Price version ${id} comes from the seed or PRICE_TABLE_FILE and cannot be changed here.`);
    if (existing && Date.parse(existing.effective_from) <= now) throw new PriceConflictError(`Price version ${id} is in effect already; add a new version instead.`);
    let models = input.models;
    if (input.extends !== undefined) {
      const parent = [...base.versions, ...stored].find((v) => v.version === input.extends);
      if (!parent) throw new TollgateError('not_found', `No price version ${input.extends} to extend.`);
      models = { ...parent.models, ...input.models };
    }
    const version: PriceTableVersion = { version: id, effective_from: new Date(at).toISOString().replace('.000Z', 'Z'), models };
    // Throws PriceTableError (a 400) on a bad key, a duplicate date, an invalid rate.
    buildPriceTable([...base.versions, ...stored.filter((v) => v.version !== id), version]);
    await this.redis.multi().hset(this.versionsKey, id, JSON.stringify(version)).incr(this.revKey).exec();
    return { version, created: !existing };
  }

  /** Removes a version that is not in effect yet. */
  async remove(id: string, now = Date.now()): Promise<boolean> {
    const existing = (await this.versions()).find((v) => v.version === id);
    if (!existing) return false;
    if (Date.parse(existing.effective_from) <= now) throw new PriceConflictError(`Price version ${id} is in effect already; its entries name it, so it stays.`);
    await this.redis.multi().hdel(this.versionsKey, id).incr(this.revKey).exec();
    return true;
  }
}

/**
 * The table a service prices with: its own versions (seed, PRICE_TABLE_FILE) plus those written
 * through the API, re-read when the revision changes. `table` is a live view: code holding it
 * sees new versions without being handed a new object.
 */
export class LivePriceTable {
  private current: PriceTable;
  private seen = -1;
  private timer: NodeJS.Timeout | undefined;
  readonly table: PriceTable;

  constructor(
    readonly store: PriceStore,
    readonly base: PriceTable,
  ) {
    this.current = base;
    const self = this;
    this.table = {
      get versions() {
        return self.current.versions;
      },
    };
  }

  /** Re-reads the API's versions if they changed; a bad stored version keeps the last good table. */
  async refresh(): Promise<void> {
    const rev = await this.store.rev();
    if (rev === this.seen) return;
    const extra = await this.store.versions();
    this.current = extra.length === 0 ? this.base : buildPriceTable([...this.base.versions, ...extra]);
    this.seen = rev;
  }

  async start(pollMs = PRICE_POLL_MS, onError: (err: unknown) => void = () => undefined): Promise<this> {
    await this.refresh();
    this.timer = setInterval(() => this.refresh().catch(onError), pollMs);
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
