import type Redis from 'ioredis';
import { CacheSettingsStore, type ChatJob, type ChatJobResult, chatJobSchema, INVALID_JOB_ERROR, PartitionedWorker, type PartitionedWorkerOptions, QUEUES, ResponseCache, SEED_PRICE_TABLE } from '@tollgate/shared';
import { type ChatDeps, type ChatRunDeps, runChatWorkflow } from './chat-workflow';

export interface ChatWorkerOptions {
  /** A connection with `maxRetriesPerRequest: null`, as BullMQ workers require. */
  connection: Redis;
  /** Jobs at once in this process, over every partition. */
  concurrency: number;
  /** QUEUE_PARTITIONS: the chat queue's partitions, every one of which this worker reads; default 1. */
  partitions?: number;
  /** Told when a partition's Worker stopped fetching and was replaced (see SupervisedWorker). */
  onReplaced?: PartitionedWorkerOptions['onReplaced'];
  /** Stored on each job it runs (BullMQ's `processedBy`): which replica served a request. */
  name?: string;
}

/**
 * The `chat` queue's worker, one BullMQ Worker per partition. Bad job data is answered as an
 * invalid request, not thrown: a throw would make BullMQ retry something that can never succeed.
 * Only infrastructure failures (Redis) throw, and a crashed worker's job is picked up again by
 * BullMQ's stalled-job check.
 */
export function createChatWorker(chatDeps: ChatDeps, opts: ChatWorkerOptions): PartitionedWorker<ChatJob, ChatJobResult> {
  const deps: ChatRunDeps = {
    ...chatDeps,
    cache: chatDeps.cache ?? new ResponseCache(chatDeps.redis, chatDeps.namespace),
    cacheSettings: chatDeps.cacheSettings ?? new CacheSettingsStore(chatDeps.redis, chatDeps.namespace),
    priceTable: chatDeps.priceTable ?? SEED_PRICE_TABLE,
  };
  return new PartitionedWorker<ChatJob, ChatJobResult>(
    QUEUES.chat,
    async (job) => {
      const parsed = chatJobSchema.safeParse(job.data);
      if (!parsed.success) {
        return { ok: false, attempts: [], error: INVALID_JOB_ERROR };
      }
      return runChatWorkflow({ enqueued_at: job.timestamp, ...parsed.data }, job.id ?? parsed.data.request_id, deps);
    },
    { connection: opts.connection, namespace: deps.namespace, partitions: opts.partitions ?? 1, concurrency: opts.concurrency, ...(opts.name && { name: opts.name }), ...(opts.onReplaced && { onReplaced: opts.onReplaced }) },
  );
}
