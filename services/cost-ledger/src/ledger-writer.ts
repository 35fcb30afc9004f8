import type Redis from 'ioredis';
import {
  type BudgetPeriod,
  type HoldKeys,
  holdKeys,
  indexMember,
  type LedgerEntry,
  type LedgerKeys,
  ledgerKeys,
  ledgerShards,
  type PeriodKeys,
  periodKeys,
  SHORT_OUTPUT_TOKENS,
  groupByShard,
  tenantShardsFrom,
} from '@tollgate/shared';
import APPEND_ENTRIES_LUA from './append-entries-n.lua';
import APPLY_TOTALS_LUA from './apply-totals-n.lua';

export interface ScopeTotal {
  scope: 'global' | 'user' | 'project';
  scope_id: string;
  period: BudgetPeriod;
  period_key: string;
  spent_micros: number;
}

export interface AppendResult {
  /** False when the entry was already there: nothing changed. */
  created: boolean;
  totals: ScopeTotal[];
}

type BatchCommand = (...args: string[]) => Promise<string[]>;

interface Pending {
  entry: LedgerEntry;
  fingerprint?: string;
  /** The request's budget hold, settled by this entry in the same step. */
  holdId?: string;
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

const PERIODS: BudgetPeriod[] = ['day', 'week', 'month'];

// Period keys depend only on the UTC date; entries of a batch almost always share it.
const periodCache = new Map<string, PeriodKeys>();
function periodsOf(occurredAt: string): PeriodKeys {
  const date = new Date(occurredAt).toISOString().slice(0, 10);
  let p = periodCache.get(date);
  if (!p) {
    if (periodCache.size > 1_000) periodCache.clear();
    p = periodKeys(`${date}T00:00:00.000Z`);
    periodCache.set(date, p);
  }
  return p;
}
const SCOPES = ['global', 'user', 'project'] as const;
/** Yesterday's applied set is checked for new entries this long into a UTC day (see apply-totals-n.lua). */
const NEW_DAY_MARGIN_MS = 10 * 60_000;
const DAY_MS = 86_400_000;
/** Batches written at once by one writer (see flush). */
const MAX_BATCHES_IN_FLIGHT = 2;

/** What step 1 found of an entry: written now, written before with totals maybe not applied, or whole. */
type Written = 'new' | 'pending' | 'done';

/**
 * The ledger's only write path. Entries written in the same tick go to Redis as one batch, in two
 * idempotent steps: each tenant shard's entries with their indexes and day detail
 * (append-entries-n.lua), then all of them into the running totals and the budget holds
 * (apply-totals-n.lua), then the shards' pending marks cleared. A crash between the
 * steps heals on redelivery: step 1 finds the entry pending and step 2 runs for it, once. Each
 * caller still gets its own entry's outcome and running totals.
 */
export class LedgerWriter {
  private readonly keys: LedgerKeys;
  private readonly shards: LedgerKeys[];
  private readonly holds: HoldKeys;
  private readonly append: BatchCommand;
  private readonly apply: BatchCommand;
  private queue: Pending[] = [];
  private scheduled = false;
  private inFlight = 0;
  /** The UTC day (ms) whose applied set this writer has given its expiry. */
  private expirySetFor = -1;

  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly maxBatch = 500,
    shards = tenantShardsFrom(),
    private readonly now: () => number = Date.now,
  ) {
    this.keys = ledgerKeys(namespace);
    this.shards = ledgerShards(namespace, shards);
    this.holds = holdKeys(namespace);
    // defineCommand sends EVALSHA, falling back to EVAL once: the script text is not resent per call.
    redis.defineCommand('tollgateLedgerAppendEntries', { lua: APPEND_ENTRIES_LUA });
    redis.defineCommand('tollgateLedgerApplyTotals', { lua: APPLY_TOTALS_LUA });
    const commands = redis as unknown as Record<string, BatchCommand>;
    this.append = commands.tollgateLedgerAppendEntries!.bind(redis);
    this.apply = commands.tollgateLedgerApplyTotals!.bind(redis);
  }

  write(entry: LedgerEntry, fingerprint?: string, holdId?: string): Promise<AppendResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ entry, fingerprint, holdId, resolve, reject });
      if (this.queue.length >= this.maxBatch) this.flush();
      else this.schedule();
    });
  }

  private flush(): void {
    this.scheduled = false;
    // At most this many batches out: entries that arrive meanwhile wait for one to end and go
    // together, so a busy ledger writes larger batches (fewer commands per entry on the totals'
    // slot) and an idle one waits for nothing.
    if (this.inFlight >= MAX_BATCHES_IN_FLIGHT) return;
    const batch = this.queue.splice(0, this.maxBatch);
    this.schedule();
    if (batch.length === 0) return;
    this.inFlight++;
    this.run(batch)
      .catch((err) => {
        for (const p of batch) p.reject(err);
      })
      .finally(() => {
        this.inFlight--;
        this.schedule();
      });
  }

  private schedule(): void {
    if (this.queue.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private async run(batch: Pending[]): Promise<void> {
    // The same entry twice in one batch (a redelivery landing in the tick of its first delivery)
    // would be stored once but aggregated twice, so repeats wait for the next round, where step 1
    // finds them written and they are reported as duplicates.
    let rest = batch;
    while (rest.length > 0) {
      const seen = new Set<string>();
      const now: Pending[] = [];
      const later: Pending[] = [];
      for (const p of rest) {
        if (seen.has(p.entry.entry_id)) later.push(p);
        else {
          seen.add(p.entry.entry_id);
          now.push(p);
        }
      }
      await this.attempt(now);
      rest = later;
    }
  }

  private async attempt(batch: Pending[]): Promise<void> {
    const byShard = groupByShard(batch, (p) => p.entry.project_id, this.shards.length);
    const written: Written[] = new Array<Written>(batch.length);
    await Promise.all(
      [...byShard].map(async ([s, positions]) => {
        const states = await this.appendEntries(this.shards[s]!, positions.map((i) => batch[i]!));
        positions.forEach((i, k) => (written[i] = states[k]!));
      }),
    );
    const toApply = batch.flatMap((p, i) => (written[i] === 'done' ? [] : [i]));
    const applied = await this.applyTotals(
      toApply.map((i) => batch[i]!),
      toApply.some((i) => written[i] === 'pending'),
    );
    // Totals applied (now, or by the delivery that crashed after step 2): the pending marks go.
    await Promise.all(
      [...byShard].map(([s, positions]) => {
        const ids = positions.filter((i) => written[i] !== 'done').map((i) => batch[i]!.entry.entry_id);
        return ids.length > 0 ? this.redis.srem(this.shards[s]!.pending, ...ids) : undefined;
      }),
    );
    const totalsOf = new Map<number, ScopeTotal[]>();
    toApply.forEach((i, k) => {
      const totals = applied[k];
      if (totals) totalsOf.set(i, totals);
    });
    const dups = batch.flatMap((p, i) => (totalsOf.has(i) ? [] : [p]));
    batch.forEach((p, i) => {
      const totals = totalsOf.get(i);
      if (totals) p.resolve({ created: true, totals });
    });
    await this.reportDuplicates(dups);
  }

  /** Step 1 in one shard: what each entry was (written now, pending, or done before). */
  private async appendEntries(shard: LedgerKeys, items: Pending[]): Promise<Written[]> {
    const out: Written[] = items.map(() => 'new');
    let live = items.map((_, i) => i);
    for (let round = 0; live.length > 0; round++) {
      if (round > items.length) throw new Error('ledger batch did not converge');
      const reply = await this.appendCommand(shard, live.map((i) => items[i]!));
      if (reply[0] !== 'dup') break;
      const found = new Set<number>();
      for (let j = 1; j < reply.length; j += 2) {
        const i = live[Number(reply[j]) - 1]!;
        out[i] = reply[j + 1] === '1' ? 'pending' : 'done';
        found.add(i);
      }
      live = live.filter((i) => !found.has(i));
    }
    return out;
  }

  private appendCommand(shard: LedgerKeys, batch: Pending[]): Promise<string[]> {
    const n = batch.length;
    const { keys: keyList, ref } = keyRefs([...batch.map(({ entry }) => shard.entry(entry.entry_id)), shard.pending]);
    const increments = new Increments();
    const indexes = new Map<number, number[]>();
    const fingerprints: Array<[number, string]> = [];
    batch.forEach(({ entry, fingerprint }, n0) => {
      const p = periodsOf(entry.occurred_at);
      const amount = entry.amount_micros;
      const modelKey = `${entry.provider}/${entry.model}`;
      // One shard: the global detail shares the day's running totals hash (as before shards), whose
      // total, user and project fields step 2 writes.
      const shared = shard.detailInTotals;
      const day = ref(shard.detail(p.day));
      const userDay = ref(shard.detail(p.day, { user: entry.user_id }));
      const projectDay = ref(shard.detail(p.day, { project: entry.project_id }));
      addDetail(increments, day, entry, !shared);
      for (const key of [userDay, projectDay]) addDetail(increments, key, entry);
      if (!shared) {
        increments.add(day, `user:${entry.user_id}`, amount);
        increments.add(day, `project:${entry.project_id}`, amount);
      }
      // Who spent inside a project, and where a user spent: a budget alert on the one names the
      // top contributors of the other from these.
      increments.add(userDay, `project:${entry.project_id}`, amount);
      increments.add(projectDay, `user:${entry.user_id}`, amount);
      if (entry.operation === 'chat' && !entry.cached && (entry.units.output_tokens ?? 0) < SHORT_OUTPUT_TOKENS) {
        increments.add(day, `short:${modelKey}`, 1);
        increments.add(day, `short_micros:${modelKey}`, amount);
      }
      if (fingerprint) {
        increments.add(day, 'fingerprinted', 1);
        increments.add(day, 'fingerprinted_micros', amount);
      }
      if (fingerprint) fingerprints.push([ref(shard.fingerprints(p.month)), fingerprint]);
      const idxKeys = [shard.index(), shard.index({ user: entry.user_id }), shard.index({ project: entry.project_id })];
      // A journey's cost is read back from its own entries, so it equals the ledger by construction.
      if (entry.journey_id !== undefined) idxKeys.push(shard.index({ journey: entry.journey_id }));
      for (const idx of idxKeys) {
        const key = ref(idx);
        const list = indexes.get(key) ?? [];
        list.push(n0 + 1);
        indexes.set(key, list);
      }
    });
    const plan = { z: [...indexes].map(([key, positions]) => [key, ...positions]), i: increments.list(), p: fingerprints };
    return this.append(
      String(keyList.length),
      ...keyList,
      String(n),
      ...batch.map(({ entry }) => JSON.stringify(entry)),
      ...batch.map(({ entry }) => indexMember(Date.parse(entry.occurred_at), entry.entry_id)),
      ...batch.map(({ entry }) => entry.entry_id),
      JSON.stringify(plan),
    );
  }

  /** Step 2 for every shard's entries at once: each entry's running totals, or null if it was applied before. */
  private async applyTotals(items: Pending[], healing: boolean): Promise<Array<ScopeTotal[] | null>> {
    const out: Array<ScopeTotal[] | null> = items.map(() => null);
    let live = items.map((_, i) => i);
    for (let round = 0; live.length > 0; round++) {
      if (round > items.length) throw new Error('ledger batch did not converge');
      const now = live.map((i) => items[i]!);
      const result = await this.applyCommand(now, healing);
      if (result.ok) {
        live.forEach((i, k) => (out[i] = result.totals[k]!));
        break;
      }
      const dup = new Set(result.duplicates.map((k) => live[k]!));
      live = live.filter((i) => !dup.has(i));
    }
    return out;
  }

  /** Per entry, the running totals it reports: day, week, month x global, user, project. */
  private runningFields(entry: LedgerEntry, p: PeriodKeys): Array<{ key: string; field: string; scope: ScopeTotal }> {
    const k = this.keys;
    const keys = { day: k.day(p.day), week: k.running('week', p.week), month: k.running('month', p.month) };
    return PERIODS.flatMap((period) =>
      SCOPES.map((scope) => {
        const scopeId = scope === 'global' ? 'all' : scope === 'user' ? entry.user_id : entry.project_id;
        return {
          key: keys[period],
          field: scope === 'global' ? 'total' : `${scope}:${scopeId}`,
          scope: { scope, scope_id: scopeId, period, period_key: p[period], spent_micros: 0 },
        };
      }),
    );
  }

  private async applyCommand(batch: Pending[], healing: boolean): Promise<{ ok: true; totals: ScopeTotal[][] } | { ok: false; duplicates: number[] }> {
    const k = this.keys;
    const now = this.now();
    const today = now - (now % DAY_MS);
    const dayKey = (t: number) => new Date(t).toISOString().slice(0, 10);
    const checks = healing || now - today < NEW_DAY_MARGIN_MS ? [k.applied(dayKey(today)), k.applied(dayKey(today - DAY_MS))] : [k.applied(dayKey(today))];
    // Today's set gets its expiry once per day and process.
    const expireAt = this.expirySetFor === today ? '' : String(Math.ceil((today + 3 * DAY_MS) / 1000));
    const { keys: keyList, ref } = keyRefs(checks);
    const increments = new Increments();
    const settles: Array<[number, number, string]> = [];
    const running = batch.map(({ entry }) => this.runningFields(entry, periodsOf(entry.occurred_at)));
    batch.forEach(({ entry, holdId }, i) => {
      if (holdId) settles.push([ref(this.holds.hold(holdId)), entry.amount_micros, holdId]);
      for (const f of running[i]!) increments.add(ref(f.key), f.field, entry.amount_micros);
    });
    // Every field incremented here is a running total: the script returns each one's new value,
    // and the value before the batch is that less the batch's share.
    const inc = increments.list();
    const plan = { i: inc, h: settles, x: settles.length > 0 ? ref(this.holds.expiry) : 0 };
    const reply = await this.apply(
      String(keyList.length),
      ...keyList,
      String(checks.length),
      expireAt,
      String(batch.length),
      ...batch.map(({ entry }) => entry.entry_id),
      JSON.stringify(plan),
    );
    if (reply[0] === 'dup') return { ok: false, duplicates: reply.slice(1).map((v) => Number(v) - 1) };
    this.expirySetFor = today;

    // Running totals as if the entries had been written one by one, in order.
    const value = new Map(inc.map(([key, field, amount], j) => [`${key}\u0000${field}`, Number(reply[1 + j]) - amount]));
    const totals = batch.map(({ entry }, i) =>
      running[i]!.map((f) => {
        const id = `${ref(f.key)}\u0000${f.field}`;
        const spent = value.get(id)! + entry.amount_micros;
        value.set(id, spent);
        return { ...f.scope, spent_micros: spent };
      }),
    );
    return { ok: true, totals };
  }

  /** A duplicate changes nothing; its caller still gets the current totals to report. */
  private async reportDuplicates(dups: Pending[]): Promise<void> {
    if (dups.length === 0) return;
    const pipe = this.redis.pipeline();
    const fields = dups.map(({ entry }) => this.runningFields(entry, periodsOf(entry.occurred_at)));
    for (const list of fields) for (const f of list) pipe.hget(f.key, f.field);
    const results = (await pipe.exec()) ?? [];
    let at = 0;
    dups.forEach(({ resolve }, i) => {
      resolve({ created: false, totals: fields[i]!.map((f) => ({ ...f.scope, spent_micros: Number(results[at++]?.[1] ?? 0) })) });
    });
  }
}

/** A script's KEYS, each key once: `ref` gives its 1-based position (Lua's KEYS is 1-based). */
function keyRefs(initial: string[]): { keys: string[]; ref: (key: string) => number } {
  const keys = [...initial];
  const index = new Map<string, number>();
  return {
    keys,
    ref: (key) => {
      let i = index.get(key);
      if (i === undefined) {
        keys.push(key);
        index.set(key, (i = keys.length));
      }
      return i;
    },
  };
}

/** A batch's increments summed per (key position, field): one HINCRBY per distinct field. */
class Increments {
  private readonly byKey = new Map<number, Map<string, number>>();
  add(key: number, field: string, amount: number): void {
    let fields = this.byKey.get(key);
    if (!fields) this.byKey.set(key, (fields = new Map()));
    fields.set(field, (fields.get(field) ?? 0) + amount);
  }
  list(): Array<[number, string, number]> {
    return [...this.byKey].flatMap(([key, fields]) => [...fields].map(([field, amount]) => [key, field, amount] as [number, string, number]));
  }
}

/** The detail every day aggregate keeps of an entry: totals, then by service, operation, provider and model. */
function addDetail(increments: Increments, key: number, entry: LedgerEntry, withTotal = true): void {
  const amount = entry.amount_micros;
  const modelKey = `${entry.provider}/${entry.model}`;
  if (withTotal) increments.add(key, 'total', amount);
  increments.add(key, 'count', 1);
  increments.add(key, `service:${entry.service}`, amount);
  increments.add(key, `operation:${entry.operation}`, amount);
  increments.add(key, `provider:${entry.provider}`, amount);
  increments.add(key, `model:${modelKey}`, amount);
  increments.add(key, `opmodel:${entry.operation}|${modelKey}`, amount);
  increments.add(key, `calls:${entry.operation}|${modelKey}`, 1);
  if (entry.avoided_micros > 0) increments.add(key, 'avoided', entry.avoided_micros);
}
