import { Queue } from 'bullmq';
import type Redis from 'ioredis';
import { type JourneyStore, queuePrefix, SupervisedWorker } from '@tollgate/shared';
import { abandonIdle, type TemplateCache } from './state-machine';

export const JOURNEY_QUEUE = 'journeys';
const SCHEDULER_ID = 'abandon-idle-journeys';

/**
 * Abandonment runs as a BullMQ job scheduler: one job every `everyMs` across all instances (the
 * scheduler is one record in Redis, upserted by each instance with the same id), picked up by any
 * instance's worker.
 */
export async function scheduleAbandonment(connection: Redis, namespace: string, everyMs: number): Promise<Queue> {
  const queue = new Queue(JOURNEY_QUEUE, { connection, prefix: queuePrefix(namespace) });
  await queue.upsertJobScheduler(SCHEDULER_ID, { every: everyMs }, { name: 'abandon-idle', opts: { removeOnComplete: 100, removeOnFail: 100 } });
  return queue;
}

export function createAbandonWorker(connection: Redis, namespace: string, store: JourneyStore, templates: TemplateCache, onAbandoned?: (n: number) => void): SupervisedWorker<unknown, { abandoned: number }> {
  return new SupervisedWorker<unknown, { abandoned: number }>(
    JOURNEY_QUEUE,
    async () => {
      const n = await abandonIdle(store, templates);
      if (n > 0) onAbandoned?.(n);
      return { abandoned: n };
    },
    { connection, prefix: queuePrefix(namespace), concurrency: 1 },
  );
}
