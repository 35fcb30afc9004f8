import { type EventBus, type EventOf, type PriceTable } from '@tollgate/shared';
import type { LedgerWriter, ScopeTotal } from './ledger-writer';
import { toEntry } from './usage-pricing';

type UsageEvent = EventOf<'usage.recorded'>;
type Entry = ReturnType<typeof toEntry>;

/** The cost.recorded of an entry; its id derives from the usage event's. */
function costEvent(event: UsageEvent, entry: Entry, totals: ScopeTotal[]) {
  return {
    type: 'cost.recorded' as const,
    data: {
      entry_id: entry.entry_id,
      usage_event_id: entry.usage_event_id,
      amount_micros: entry.amount_micros,
      ...(entry.avoided_micros > 0 && { avoided_micros: entry.avoided_micros }),
      price_version: entry.price_version,
      provider: entry.provider,
      model: entry.model,
      service: entry.service,
      operation: entry.operation,
      units: entry.units,
      cached: entry.cached,
      occurred_at: entry.occurred_at,
      totals,
    },
    meta: {
      id: `cost-${event.id}`,
      correlation_id: event.correlation_id,
      ...(event.user_id !== undefined && { user_id: event.user_id }),
      ...(event.project_id !== undefined && { project_id: event.project_id }),
      ...(event.journey_id !== undefined && { journey_id: event.journey_id }),
      ...(event.journey_step !== undefined && { journey_step: event.journey_step }),
    },
  };
}

/**
 * usage.recorded in, one ledger entry and one cost.recorded out, a bus read at a time: every
 * entry is priced before any is written (an unpriceable one fails the batch before it writes, and
 * is then dead-lettered alone), the entries go out in the writer's batches, and their cost events
 * in one round trip. A redelivery finds its entry written and republishes the same cost event id,
 * which consumers recognise.
 */
export function consumeUsage(bus: EventBus, writer: LedgerWriter, table: PriceTable): () => void {
  return bus.subscribeBatch(
    'usage.recorded',
    async (items) => {
      const events = items.map((it) => it.event);
      const entries = events.map((e) => toEntry(e, table));
      const written = await Promise.all(entries.map((entry, i) => writer.write(entry, events[i]!.data.request_fingerprint, events[i]!.data.hold_id)));
      await bus.publishMany(events.map((e, i) => costEvent(e, entries[i]!, written[i]!.totals)));
    },
    { name: 'ledger' },
  );
}
