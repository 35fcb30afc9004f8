import { createRedis, EventBus, EXAMPLE_TEMPLATES, JourneyStore } from '@tollgate/shared';
import { TEST_REDIS_URL } from '@tollgate/shared/src/testing';
import { createAbandonWorker, scheduleAbandonment } from '@tollgate/journeys/src/abandoner';
import { consumeForJourneys } from '@tollgate/journeys/src/consumer';
import { TemplateCache } from '@tollgate/journeys/src/state-machine';
import type Redis from 'ioredis';
import type { FullSystem } from './full-harness';

export interface JourneyService {
  store: JourneyStore;
  /** The service's own bus (its consumer group), for reading history. */
  bus: EventBus;
  close(): Promise<void>;
}

/**
 * The journey service beside a test system, wired as services/journeys wires it: the example
 * templates, its consumer group and the abandonment scheduler sweeping every `sweepMs`.
 */
export async function startJourneyService(sys: FullSystem, sweepMs: number): Promise<JourneyService> {
  const store = new JourneyStore(sys.redis, sys.namespace, 'journeys');
  for (const [key, input] of Object.entries(EXAMPLE_TEMPLATES)) await store.seedTemplate(key, input, 'start-up');
  const templates = new TemplateCache(store);
  const bus = new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'journeys', blockMs: 50 });
  consumeForJourneys(bus, store, templates);
  await bus.start();
  const conns: Redis[] = [];
  const conn = () => {
    const c = createRedis(TEST_REDIS_URL, { blocking: true });
    conns.push(c);
    return c;
  };
  const queue = await scheduleAbandonment(conn(), sys.namespace, sweepMs);
  const worker = createAbandonWorker(conn(), sys.namespace, store, templates);
  return {
    store,
    bus,
    async close() {
      await worker.close();
      await queue.close();
      await bus.stop();
      for (const c of conns) await c.quit().catch(() => undefined);
    },
  };
}
