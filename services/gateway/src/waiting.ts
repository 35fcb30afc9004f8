import type { Queue, QueueEvents } from 'bullmq';

/**
 * Each request waiting on a job adds one listener to its queue and queue events (BullMQ's
 * waitUntilFinished); hundreds in flight are expected, so the leak warning starts far above that.
 */
export function allowWaiters(queue: Queue, events: QueueEvents, max = 10_000): void {
  queue.setMaxListeners(Math.max(queue.getMaxListeners(), max));
  events.setMaxListeners(Math.max(events.getMaxListeners(), max));
}
