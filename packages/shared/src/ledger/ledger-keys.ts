import type { Period } from '../time/periods';

/**
 * Where the ledger lives in Redis. Written only by the cost-ledger service (one Lua script per
 * entry); read by the gateway's cost API and admission, by budget writes and by the alerting
 * service (spend of a newly budgeted scope, top contributors). Every key is under the
 * namespace's hash tag, so the scripts' keys share one Redis Cluster slot.
 *
 * - entry:{id}                      the entry (JSON); its SET NX is the idempotency check
 * - idx:all | idx:user:{u} | idx:project:{p} | idx:journey:{j}
 *                                   sorted sets, score 0, member `{ms padded}:{entry id}`: time order and cursors by lex
 * - agg:day:{day}                   global detail for a UTC day: total, count, avoided, `{dimension}:{value}`
 * - agg:day:{day}:user:{u} / :project:{p}
 *                                   the same detail inside one user's or project's spend, with
 *                                   `project:{p}` in a user's and `user:{u}` in a project's
 * - agg:{week|month}:{key}          running totals for budgets: total, user:{u}, project:{p}
 * Week and month detail is the sum of their days, so every figure derives from the entries.
 */
export function ledgerKeys(namespace: string) {
  const k = (...parts: string[]) => [namespace, 'ledger', ...parts].join(':');
  return {
    entry: (entryId: string) => k('entry', entryId),
    index: (scope?: { user?: string; project?: string; journey?: string }) =>
      scope?.user !== undefined
        ? k('idx', 'user', scope.user)
        : scope?.project !== undefined
          ? k('idx', 'project', scope.project)
          : scope?.journey !== undefined
            ? k('idx', 'journey', scope.journey)
            : k('idx', 'all'),
    day: (dayKey: string, scope?: { user?: string; project?: string }) =>
      scope?.user !== undefined
        ? k('agg', 'day', dayKey, 'user', scope.user)
        : scope?.project !== undefined
          ? k('agg', 'day', dayKey, 'project', scope.project)
          : k('agg', 'day', dayKey),
    running: (period: Exclude<Period, 'day'>, key: string) => k('agg', period, key),
    /**
     * The hash with a period's running totals (`total`, `user:{u}`, `project:{p}`): the day's
     * global aggregate, or the week's or month's running totals. What budgets are judged against.
     */
    totals: (period: Period, key: string) => (period === 'day' ? k('agg', 'day', key) : k('agg', period, key)),
    report: (period: Period, key: string) => k('report', period, key),
    /** HyperLogLog of request fingerprints per month: repeats a cache would have absorbed. */
    fingerprints: (monthKey: string) => k('fp', monthKey),
    prefix: () => k(''),
  };
}
export type LedgerKeys = ReturnType<typeof ledgerKeys>;

export const GROUP_DIMENSIONS = ['service', 'operation', 'provider', 'model', 'user', 'project'] as const;
export type GroupDimension = (typeof GROUP_DIMENSIONS)[number];

/** Index members sort by time: zero-padded epoch ms, then the entry id for ties. */
export function indexMember(occurredMs: number, entryId: string): string {
  return `${String(occurredMs).padStart(15, '0')}:${entryId}`;
}
