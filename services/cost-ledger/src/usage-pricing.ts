import { type EventOf, type LedgerEntry, permanent, price, type PriceTable, searchMicros, TollgateError, UNATTRIBUTED } from '@tollgate/shared';

export type UsageEvent = EventOf<'usage.recorded'>;

/** Entry ids derive from the usage event id, so a redelivered or replayed event maps to the same entry. */
export const entryIdFor = (usageEventId: string) => `le_${usageEventId}`;

/**
 * Prices one usage event with the version in force when the call happened (or when its hold was
 * priced, for a reported external call: `priced_at`). A cache hit costs
 * zero and records what it saved. A model or unit the table cannot price is an error that no
 * retry fixes: it is dead-lettered with the reason, never priced as zero.
 */
export function toEntry(event: UsageEvent, table: PriceTable, now = new Date()): LedgerEntry {
  const d = event.data;
  let priced;
  try {
    priced = price({ provider: d.provider, model: d.model, units: d.units }, { at: d.priced_at ?? event.occurred_at, table });
  } catch (err) {
    throw err instanceof TollgateError ? permanent(err) : err;
  }
  const search = searchMicros(priced);
  return {
    entry_id: entryIdFor(event.id),
    usage_event_id: event.id,
    amount_micros: d.cached ? 0 : priced.amount_micros,
    avoided_micros: d.cached ? (d.avoided_micros ?? priced.amount_micros) : 0,
    price_version: priced.price_version,
    provider: d.provider,
    model: d.model,
    service: d.service,
    operation: d.operation,
    units: d.units,
    ...(search > 0 && { search_micros: search }),
    cached: d.cached,
    ...(d.reused_request_id !== undefined && { reused_request_id: d.reused_request_id }),
    usage_source: d.usage_source,
    user_id: event.user_id ?? UNATTRIBUTED,
    project_id: event.project_id ?? UNATTRIBUTED,
    correlation_id: event.correlation_id,
    request_id: d.request_id,
    ...(event.journey_id !== undefined && { journey_id: event.journey_id }),
    ...(event.journey_step !== undefined && { journey_step: event.journey_step }),
    occurred_at: event.occurred_at,
    recorded_at: now.toISOString(),
  };
}
