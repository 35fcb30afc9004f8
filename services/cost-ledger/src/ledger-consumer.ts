import { type EventBus, type PriceTable } from '@tollgate/shared';
import type { LedgerWriter } from './ledger-writer';
import { toEntry } from './usage-pricing';

/**
 * usage.recorded in, one ledger entry and one cost.recorded out. The cost event's id derives
 * from the usage event's, so a redelivery that republishes it is recognisable downstream.
 */
export function consumeUsage(bus: EventBus, writer: LedgerWriter, table: PriceTable): () => void {
  return bus.subscribe(
    'usage.recorded',
    async (event) => {
      const entry = toEntry(event, table);
      const { totals } = await writer.write(entry, event.data.request_fingerprint, event.data.hold_id);
      await bus.publish(
        'cost.recorded',
        {
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
        {
          id: `cost-${event.id}`,
          correlation_id: event.correlation_id,
          ...(event.user_id !== undefined && { user_id: event.user_id }),
          ...(event.project_id !== undefined && { project_id: event.project_id }),
          ...(event.journey_id !== undefined && { journey_id: event.journey_id }),
          ...(event.journey_step !== undefined && { journey_step: event.journey_step }),
        },
      );
    },
    { name: 'ledger' },
  );
}
