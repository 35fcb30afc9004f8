import type { BudgetPeriod, BudgetScope } from '../errors/tollgate-error';
import { keyspace } from '../keys';

/** The global budget has one identity whatever id a producer stamps on global totals. */
export const GLOBAL_SCOPE_ID = 'global';

/**
 * Redis keys shared by the alerting service (which writes spend, alerts and blocks) and the
 * gateway (which writes budgets and reads blocks, alerts and the alerts stream). They live here
 * because both sides must agree on them; everything sits under the namespace's hash tag, so the
 * scripts that touch several of them together run in one Redis Cluster slot.
 */
export function alertingKeys(namespace: string) {
  const k = keyspace(namespace);
  const id = (scope: BudgetScope, scopeId: string) => (scope === 'global' ? GLOBAL_SCOPE_ID : scopeId);
  return {
    /** JSON budget document of one scope. */
    budget: (scope: BudgetScope, scopeId: string) => k('budget', scope, id(scope, scopeId)),
    /** Incremented on every write of that budget: evaluations made with an older budget retry. */
    budgetRevision: (scope: BudgetScope, scopeId: string) => k('budget', 'rev', scope, id(scope, scopeId)),
    /** Set of `scope:scope_id` with a stored budget. */
    budgetIndex: k('budgets'),
    /**
     * Incremented whenever a scope joins or leaves the budget index: the alerting service keeps the
     * index in memory and skips scopes without a budget, and reloads it when this moves.
     */
    budgetIndexVersion: k('budgets', 'ver'),
    /** The config defaults the alerting service applies to the global scope, for display. */
    budgetDefaults: k('budget', 'defaults'),
    /** Scopes whose budget changed since the alerting service last re-evaluated them. */
    budgetDirty: k('budgets', 'dirty'),
    /** Present while a hard budget is used up; expires at the period's end. */
    block: (scope: BudgetScope, scopeId: string, period: BudgetPeriod) => k('budget', 'block', scope, id(scope, scopeId), period),
    /**
     * The highest running total seen for a scope's period, a plain integer: from `cost.recorded`,
     * and from the ledger when a budget is written or re-evaluated. Only scopes with a budget
     * (the global one also with configured defaults) have it; the ledger's own running totals
     * are the authority, this is alerting's copy of the part it judges.
     */
    spent: (scope: BudgetScope, scopeId: string, period: BudgetPeriod, periodKey: string) =>
      k('budget', 'spent', scope, id(scope, scopeId), period, periodKey),
    /**
     * One budget window (a scope's period) as a hash with one field, `hi`: the highest threshold
     * already handled (fired or inhibited). Top contributors come from the ledger's aggregates.
     */
    window: (scope: BudgetScope, scopeId: string, period: BudgetPeriod, periodKey: string) =>
      k('budget', 'win', scope, id(scope, scopeId), period, periodKey),

    /** The notification log and delivery stream ops tools read. */
    alertsStream: k('alerts'),
    /** JSON record of one alert (one firing and its resolution). */
    alert: (alertId: string) => k('alert', 'id', alertId),
    /** Current alert of a fingerprint: hash {alert_id, state}. */
    fingerprint: (fingerprint: string) => k('alert', 'fp', fingerprint),
    /** Every alert id scored by its last change (ms). */
    alertIndex: k('alerts', 'index'),
    /** Alert ids of one scope (`ops` for operational alerts), scored by last change. */
    alertScopeIndex: (scope: string, scopeId: string) => k('alerts', 'index', scope, scopeId),
    /** Fingerprints currently firing. */
    firing: k('alerts', 'firing'),

    /** Open circuits as the alerting service last heard of them: hash breaker -> JSON. */
    circuits: k('ops', 'circuits'),
    /** Sorted set of error event ids by time, per service and category. */
    errors: (service: string, category: string) => k('ops', 'errors', service, category),

    /** Silences: hash id -> JSON; expired ones are ignored and pruned. */
    silences: k('alerts', 'silences'),
    /** Webhook targets: hash name -> JSON {url, secret, created_at}. */
    webhooks: k('alerts', 'webhooks'),
    /** Deliveries that failed after the last retry: hash delivery id -> JSON. */
    webhookDeadLetters: k('alerts', 'webhooks', 'dead'),
  };
}
export type AlertingKeys = ReturnType<typeof alertingKeys>;
