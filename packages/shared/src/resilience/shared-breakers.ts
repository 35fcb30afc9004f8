import type Redis from 'ioredis';
import type { EventBus } from '../bus/event-bus';
import { EventTail } from '../bus/event-tail';
import { type BreakerOptions, BreakerRegistry } from './breakers';

/**
 * A breaker registry whose openings and closings every instance learns through the bus, so the
 * replicas stop calling a dead provider together. Each instance ignores its own announcements.
 */
export async function startSharedBreakers(
  bus: EventBus,
  redis: Redis,
  namespace: string,
  instance: string,
  options?: BreakerOptions,
): Promise<{ breakers: BreakerRegistry; stop: () => Promise<void> }> {
  const breakers = new BreakerRegistry({
    publish: (type, data) => bus.publish(type, { ...data, instance }, { correlation_id: `breaker:${data.breaker}` }),
    ...(options && { options }),
  });
  // The tail reads every bus event to find the rare circuit ones: 20 ms batches keep that cheap,
  // and a replica learning of an opening 20 ms later only lets a call or two through.
  const sync = new EventTail({ redis, prefix: namespace, partitions: bus.partitions, types: 'circuit.*', lingerMs: 20 }, (event) => {
    if ((event.type === 'circuit.opened' || event.type === 'circuit.closed') && event.data.instance !== instance) {
      breakers.applyRemote(event.type, event.data);
    }
  });
  await sync.start();
  return {
    breakers,
    stop: async () => {
      await sync.stop();
      breakers.shutdown();
    },
  };
}
