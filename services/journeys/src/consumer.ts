import type { AnyEvent, EventBus, JourneyStore } from '@tollgate/shared';
import { advance, type AdvanceOutcome, type TemplateCache } from './state-machine';

export type JourneyCounts = Record<AdvanceOutcome, number>;

/** Every event that carries a journey (other than the journey's own) goes to the state machine. */
export function consumeForJourneys(bus: EventBus, store: JourneyStore, templates: TemplateCache): { counts: JourneyCounts; stop: () => void } {
  const counts: JourneyCounts = { applied: 0, seen: 0, no_step: 0, not_active: 0, unknown_journey: 0, ignored: 0 };
  // One journey's events are applied one after another, in the order the bus delivered them: run
  // side by side, a later step's event could be judged before the earlier step it depends on was
  // recorded (and dropped as matching no step), and a burst would exhaust the compare-and-set.
  const chains = new Map<string, Promise<unknown>>();
  const inTurn = (journey: string, work: () => Promise<void>): Promise<void> => {
    const run = (chains.get(journey) ?? Promise.resolve()).then(work, work);
    chains.set(journey, run);
    void run.finally(() => chains.get(journey) === run && chains.delete(journey)).catch(() => undefined);
    return run;
  };
  const stop = bus.subscribe(
    '*',
    (event: AnyEvent) =>
      inTurn(event.journey_id!, async () => {
        counts[await advance(store, templates, event)]++;
      }),
    { name: 'journeys', journeysOnly: true, filter: (e) => !e.type.startsWith('journey.') },
  );
  return { counts, stop };
}
