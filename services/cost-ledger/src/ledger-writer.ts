import type Redis from 'ioredis';
import { type BudgetPeriod, type HoldKeys, holdKeys, indexMember, type LedgerEntry, ledgerKeys, type PeriodKeys, periodKeys, SHORT_OUTPUT_TOKENS } from '@tollgate/shared';
import APPEND_BATCH_LUA from './append-batch-n.lua';

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

/**
 * The ledger's only write path. Entries written in the same tick go to Redis as one batch
 * (one script call, see append-batch-n.lua); each caller still gets its own entry's outcome and
 * running totals.
 */
export class LedgerWriter {
  private readonly keys;
  private readonly holds: HoldKeys;
  private readonly command: BatchCommand;
  private queue: Pending[] = [];
  private scheduled = false;

  private readonly redisForReads: Redis;

  constructor(
    redis: Redis,
    namespace: string,
    private readonly maxBatch = 500,
  ) {
    this.redisForReads = redis;
    this.keys = ledgerKeys(namespace);
    this.holds = holdKeys(namespace);
    // defineCommand sends EVALSHA, falling back to EVAL once: the script text is not resent per call.
    redis.defineCommand('tollgateLedgerAppendBatch', { lua: APPEND_BATCH_LUA });
    const command = (redis as unknown as Record<string, BatchCommand>).tollgateLedgerAppendBatch!;
    this.command = command.bind(redis);
  }

  write(entry: LedgerEntry, fingerprint?: string, holdId?: string): Promise<AppendResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ entry, fingerprint, holdId, resolve, reject });
      if (this.queue.length >= this.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue.splice(0, this.maxBatch);
    if (this.queue.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    if (batch.length === 0) return;
    this.run(batch).catch((err) => {
      for (const p of batch) p.reject(err);
    });
  }

  private async run(batch: Pending[]): Promise<void> {
    let rest = batch;
    // Entries already in the ledger make the script write nothing; drop them and go again.
    // The same entry twice in one batch (a redelivery landing in the tick of its first delivery)
    // would be stored once but aggregated twice, so repeats wait for the next round, where the
    // script finds them written and they are reported as duplicates.
    for (let round = 0; rest.length > 0; round++) {
      if (round > batch.length) throw new Error('ledger batch did not converge');
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
      const outcome = await this.attempt(now);
      if (outcome.ok) {
        rest = later;
        continue;
      }
      const dup = new Set(outcome.duplicates);
      await this.reportDuplicates(now.filter((_, i) => dup.has(i)));
      rest = [...now.filter((_, i) => !dup.has(i)), ...later];
    }
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

  private async attempt(batch: Pending[]): Promise<{ ok: true } | { ok: false; duplicates: number[] }> {
    const k = this.keys;
    const n = batch.length;
    const keyList = batch.map(({ entry }) => k.entry(entry.entry_id));
    const keyIndex = new Map<string, number>();
    const ref = (key: string) => {
      let i = keyIndex.get(key);
      if (i === undefined) {
        keyList.push(key);
        i = keyList.length; // Lua's KEYS is 1-based
        keyIndex.set(key, i);
      }
      return i;
    };
    const increments = new Map<number, Map<string, number>>();
    const add = (key: number, field: string, amount: number) => {
      let fields = increments.get(key);
      if (!fields) increments.set(key, (fields = new Map()));
      fields.set(field, (fields.get(field) ?? 0) + amount);
    };
    const indexes = new Map<number, number[]>();
    const fingerprints: Array<[number, string]> = [];
    const settles: Array<[number, number, string]> = [];
    const periods = batch.map(({ entry }) => periodsOf(entry.occurred_at));
    const running = batch.map(({ entry }, i) => this.runningFields(entry, periods[i]!));

    batch.forEach(({ entry, fingerprint, holdId }, n0) => {
      if (holdId) settles.push([ref(this.holds.hold(holdId)), entry.amount_micros, holdId]);
      const p = periods[n0]!;
      const amount = entry.amount_micros;
      const modelKey = `${entry.provider}/${entry.model}`;
      const day = ref(k.day(p.day));
      const userDay = ref(k.day(p.day, { user: entry.user_id }));
      const projectDay = ref(k.day(p.day, { project: entry.project_id }));
      for (const key of [day, userDay, projectDay]) {
        add(key, 'total', amount);
        add(key, 'count', 1);
        add(key, `service:${entry.service}`, amount);
        add(key, `operation:${entry.operation}`, amount);
        add(key, `provider:${entry.provider}`, amount);
        add(key, `model:${modelKey}`, amount);
        add(key, `opmodel:${entry.operation}|${modelKey}`, amount);
        add(key, `calls:${entry.operation}|${modelKey}`, 1);
        if (entry.avoided_micros > 0) add(key, 'avoided', entry.avoided_micros);
      }
      add(day, `user:${entry.user_id}`, amount);
      add(day, `project:${entry.project_id}`, amount);
      // Who spent inside a project, and where a user spent: a budget alert on the one names the
      // top contributors of the other from these.
      add(userDay, `project:${entry.project_id}`, amount);
      add(projectDay, `user:${entry.user_id}`, amount);
      if (entry.operation === 'chat' && !entry.cached && (entry.units.output_tokens ?? 0) < SHORT_OUTPUT_TOKENS) {
        add(day, `short:${modelKey}`, 1);
        add(day, `short_micros:${modelKey}`, amount);
      }
      if (fingerprint) {
        add(day, 'fingerprinted', 1);
        add(day, 'fingerprinted_micros', amount);
        fingerprints.push([ref(k.fingerprints(p.month)), fingerprint]);
      }
      for (const key of [ref(k.running('week', p.week)), ref(k.running('month', p.month))]) {
        add(key, 'total', amount);
        add(key, `user:${entry.user_id}`, amount);
        add(key, `project:${entry.project_id}`, amount);
      }
      const idxKeys = [k.index(), k.index({ user: entry.user_id }), k.index({ project: entry.project_id })];
      // A journey's cost is read back from its own entries, so it equals the ledger by construction.
      if (entry.journey_id !== undefined) idxKeys.push(k.index({ journey: entry.journey_id }));
      for (const idx of idxKeys) {
        const key = ref(idx);
        const list = indexes.get(key) ?? [];
        list.push(n0 + 1);
        indexes.set(key, list);
      }
    });

    const runningKeys: Array<[number, string]> = [];
    const runningPos = new Map<string, number>();
    for (const fields of running) {
      for (const f of fields) {
        const id = `${f.key}\u0000${f.field}`;
        if (!runningPos.has(id)) {
          runningPos.set(id, runningKeys.length);
          runningKeys.push([ref(f.key), f.field]);
        }
      }
    }
    const plan = {
      z: [...indexes].map(([key, positions]) => [key, ...positions]),
      i: [...increments].flatMap(([key, fields]) => [...fields].map(([field, amount]) => [key, field, amount])),
      r: runningKeys,
      p: fingerprints,
      h: settles,
      x: settles.length > 0 ? ref(this.holds.expiry) : 0,
    };
    const reply = await this.command(
      String(keyList.length),
      ...keyList,
      String(n),
      ...batch.map(({ entry }) => JSON.stringify(entry)),
      ...batch.map(({ entry }) => indexMember(Date.parse(entry.occurred_at), entry.entry_id)),
      JSON.stringify(plan),
    );
    if (reply[0] === 'dup') return { ok: false, duplicates: reply.slice(1).map((v) => Number(v) - 1) };

    // Running totals as if the entries had been written one by one, in order.
    const values = reply.slice(1).map(Number);
    batch.forEach(({ entry, resolve }, i) => {
      const totals = running[i]!.map((f) => {
        const pos = runningPos.get(`${f.key}\u0000${f.field}`)!;
        values[pos] = values[pos]! + entry.amount_micros;
        return { ...f.scope, spent_micros: values[pos]! };
      });
      resolve({ created: true, totals });
    });
    return { ok: true };
  }

  /** A duplicate changes nothing; its caller still gets the current totals to report. */
  private async reportDuplicates(dups: Pending[]): Promise<void> {
    if (dups.length === 0) return;
    const pipe = this.redisForReads.pipeline();
    const fields = dups.map(({ entry }) => this.runningFields(entry, periodsOf(entry.occurred_at)));
    for (const list of fields) for (const f of list) pipe.hget(f.key, f.field);
    const results = (await pipe.exec()) ?? [];
    let at = 0;
    dups.forEach(({ resolve }, i) => {
      resolve({ created: false, totals: fields[i]!.map((f) => ({ ...f.scope, spent_micros: Number(results[at++]?.[1] ?? 0) })) });
    });
  }
}
