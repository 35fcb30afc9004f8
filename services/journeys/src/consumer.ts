import type { AnyEvent, EventBus, JourneyStore } from '@tollgate/shared';
import { advance, type AdvanceOutcome, type TemplateCache } from './state-machine';

export type JourneyCounts = Record<AdvanceOutcome, number>;

/** Every event that carries a journey (other than the journey's own) goes to the state machine. */
export function consumeForJourneys(bus: EventBus, store: JourneyStore, templates: TemplateCache): { counts: JourneyCounts; stop: () => void } {
  const counts: JourneyCounts = { applied: 0, seen: 0, no_step: 0, not_active: 0, unknown_journey: 0, ignored: 0 };
  const stop = bus.subscribe(
    '*',
    async (event: AnyEvent) => {
      counts[await advance(store, templates, event)]++;
    },
    { name: 'journeys', journeysOnly: true, filter: (e) => !e.type.startsWith('journey.') },
  );
  return { counts, stop };
}
