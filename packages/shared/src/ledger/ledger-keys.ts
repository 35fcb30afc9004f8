import { tenantShardsFrom } from '../config';
import { projectNamespace, tenantShardNamespaces } from '../tenant-shards';
import type { Period } from '../time/periods';

/**
 * Where the ledger lives in Redis. Written only by the cost-ledger service; read by the gateway's
 * cost API and admission, by budget writes and by the alerting service.
 *
 * Two places (see tenant-shards.ts). In the project's tenant shard, with the entry's own records:
 * - entry:{id}                      the entry (JSON); its existence is the idempotency check
 * - idx:all | idx:user:{u} | idx:project:{p} | idx:journey:{j}
 *                                   sorted sets, score 0, member `{ms padded}:{entry id}`: time
 *                                   order and cursors by lex (idx:all and idx:user hold the shard's
 *                                   part; readers merge the shards)
 * - agg:day:{day}:all | agg:day:{day}:user:{u} | agg:day:{day}:project:{p}
 *                                   the detail of a UTC day, of all the shard's entries or of one
 *                                   user's or project's: total, count, avoided, `{dimension}:{value}`
 *                                   (`user:..` and `project:..` in the shard's, `project:{p}` in a
 *                                   user's, `user:{u}` in a project's); a user's and the global one
 *                                   are summed over the shards
 * - fp:{month}                      HyperLogLog of request fingerprints: repeats a cache would have absorbed
 * - pending                         entries written whose totals may not be applied yet
 * Under the namespace's own tag, where admission and budgets read them atomically with holds:
 * - agg:day:{day}                   the day's running totals: total, user:{u}, project:{p}
 * - agg:{week|month}:{key}          running totals for budgets: total, user:{u}, project:{p}
 * - applied:{day}                   entry ids whose totals were applied, by UTC day of applying
 * Week and month detail is the sum of their days, so every figure derives from the entries.
 * With one shard, both places are the namespace and the global detail is `agg:day:{day}` itself
 * (beside the running totals, as before shards): every key is what it was before shards.
 */
export function ledgerKeys(namespace: string, detailInTotals = false) {
  const k = (...parts: string[]) => [namespace, 'ledger', ...parts].join(':');
  const detail = (dayKey: string, scope?: { user?: string; project?: string }) =>
    scope?.user !== undefined
      ? k('agg', 'day', dayKey, 'user', scope.user)
      : scope?.project !== undefined
        ? k('agg', 'day', dayKey, 'project', scope.project)
        : k('agg', 'day', dayKey, ...(detailInTotals ? [] : ['all']));
  return {
    /** The global day detail is the day's running totals hash (one shard: as before shards). */
    detailInTotals,
    entry: (entryId: string) => k('entry', entryId),
    index: (scope?: { user?: string; project?: string; journey?: string }) =>
      scope?.user !== undefined
        ? k('idx', 'user', scope.user)
        : scope?.project !== undefined
          ? k('idx', 'project', scope.project)
          : scope?.journey !== undefined
            ? k('idx', 'journey', scope.journey)
            : k('idx', 'all'),
    /** A user's or project's day detail, or without a scope the day's running totals. */
    day: (dayKey: string, scope?: { user?: string; project?: string }) =>
      scope?.user !== undefined || scope?.project !== undefined ? detail(dayKey, scope) : k('agg', 'day', dayKey),
    /**
     * Day detail: a user's or project's, or without a scope the shard's part of the global detail
     * (`agg:day:{day}:all`, summed over the shards; `agg:day:{day}` with one shard).
     */
    detail,
    running: (period: Exclude<Period, 'day'>, key: string) => k('agg', period, key),
    /**
     * The hash with a period's running totals (`total`, `user:{u}`, `project:{p}`): the day's
     * global aggregate, or the week's or month's running totals. What budgets are judged against.
     */
    totals: (period: Period, key: string) => (period === 'day' ? k('agg', 'day', key) : k('agg', period, key)),
    report: (period: Period, key: string) => k('report', period, key),
    /** HyperLogLog of request fingerprints per month: repeats a cache would have absorbed. */
    fingerprints: (monthKey: string) => k('fp', monthKey),
    /** Set of entry ids written in this shard whose totals may not be applied yet. */
    pending: k('pending'),
    /** Set of entry ids whose totals were applied on a UTC day (of applying). */
    applied: (dayKey: string) => k('applied', dayKey),
    prefix: () => k(''),
  };
}
export type LedgerKeys = ReturnType<typeof ledgerKeys>;

/** The ledger keys of each tenant shard (TENANT_SHARDS as the services resolve it by default). */
export function ledgerShards(namespace: string, n = tenantShardsFrom()): LedgerKeys[] {
  return tenantShardNamespaces(namespace, n).map((ns) => ledgerKeys(ns, n === 1));
}

/** The ledger keys of a project's shard: its entries, indexes and day detail. */
export function ledgerKeysOf(namespace: string, project: string, n = tenantShardsFrom()): LedgerKeys {
  return ledgerKeys(projectNamespace(namespace, project, n), n === 1);
}

export const GROUP_DIMENSIONS = ['service', 'operation', 'provider', 'model', 'user', 'project'] as const;
export type GroupDimension = (typeof GROUP_DIMENSIONS)[number];

/** Index members sort by time: zero-padded epoch ms, then the entry id for ties. */
export function indexMember(occurredMs: number, entryId: string): string {
  return `${String(occurredMs).padStart(15, '0')}:${entryId}`;
}
