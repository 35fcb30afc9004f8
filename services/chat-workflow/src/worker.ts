import { Worker } from 'bullmq';
import type Redis from 'ioredis';
import { type ChatJob, type ChatJobResult, chatJobSchema, INVALID_JOB_ERROR, QUEUES, queuePrefix, WORKER_RECOVERY } from '@tollgate/shared';
import { type ChatDeps, runChatWorkflow } from './chat-workflow';

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
export function createChatWorker(deps: ChatDeps, opts: ChatWorkerOptions): Worker<ChatJob, ChatJobResult> {
  return new Worker<ChatJob, ChatJobResult>(
    QUEUES.chat,
    async (job) => {
      const parsed = chatJobSchema.safeParse(job.data);
      if (!parsed.success) {
        return { ok: false, attempts: [], error: INVALID_JOB_ERROR };
      }
      return runChatWorkflow(parsed.data, job.id ?? parsed.data.request_id, deps);
    },
    { connection: opts.connection, prefix: queuePrefix(deps.namespace), concurrency: opts.concurrency, autorun: true, ...(opts.name && { name: opts.name }), ...WORKER_RECOVERY },
  );
}
