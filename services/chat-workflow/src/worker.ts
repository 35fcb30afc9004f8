import { Worker } from 'bullmq';
import type Redis from 'ioredis';
import { CacheSettingsStore, type ChatJob, type ChatJobResult, chatJobSchema, INVALID_JOB_ERROR, QUEUES, queuePrefix, ResponseCache, SEED_PRICE_TABLE, WORKER_RECOVERY } from '@tollgate/shared';
import { type ChatDeps, type ChatRunDeps, runChatWorkflow } from './chat-workflow';

export interface ChatWorkerOptions {
  /** A connection with `maxRetriesPerRequest: null`, as BullMQ workers require. */
  connection: Redis;
  concurrency: number;
  /** Stored on each job it runs (BullMQ's `processedBy`): which replica served a request. */
  name?: string;
}

/**
 * The `chat` queue's worker. Bad job data is answered as an invalid request, not thrown: a throw
 * would make BullMQ retry something that can never succeed. Only infrastructure failures (Redis)
 * throw, and a crashed worker's job is picked up again by BullMQ's stalled-job check.
 */
export function createChatWorker(chatDeps: ChatDeps, opts: ChatWorkerOptions): Worker<ChatJob, ChatJobResult> {
  const deps: ChatRunDeps = {
    ...chatDeps,
    cache: chatDeps.cache ?? new ResponseCache(chatDeps.redis, chatDeps.namespace),
    cacheSettings: chatDeps.cacheSettings ?? new CacheSettingsStore(chatDeps.redis, chatDeps.namespace),
    priceTable: chatDeps.priceTable ?? SEED_PRICE_TABLE,
  };
  return new Worker<ChatJob, ChatJobResult>(
    QUEUES.chat,
    async (job) => {
      const parsed = chatJobSchema.safeParse(job.data);
      if (!parsed.success) {
        return { ok: false, attempts: [], error: INVALID_JOB_ERROR };
      }
      return runChatWorkflow({ enqueued_at: job.timestamp, ...parsed.data }, job.id ?? parsed.data.request_id, deps);
    },
    { connection: opts.connection, prefix: queuePrefix(deps.namespace), concurrency: opts.concurrency, autorun: true, ...(opts.name && { name: opts.name }), ...WORKER_RECOVERY },
  );
}
