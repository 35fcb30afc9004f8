import { Worker } from 'bullmq';
import type Redis from 'ioredis';
import { INVALID_JOB_ERROR, QUEUES, queuePrefix, WORKER_RECOVERY, type VisionJob, type VisionJobResult, visionJobSchema } from '@tollgate/shared';
import { runVisionWorkflow, VISION_STEPS, type VisionDeps } from './vision-workflow';

export interface VisionWorkerOptions {
  /** A connection with `maxRetriesPerRequest: null`, as BullMQ workers require. */
  connection: Redis;
  concurrency: number;
}

/**
 * The `vision` queue's worker. Bad job data is answered as an invalid request, not thrown: a
 * throw would make BullMQ retry something that can never succeed. Only infrastructure failures
 * (Redis) throw, and a crashed worker's job is picked up again by BullMQ's stalled-job check.
 */
export function createVisionWorker(deps: VisionDeps, opts: VisionWorkerOptions): Worker<VisionJob, VisionJobResult> {
  return new Worker<VisionJob, VisionJobResult>(
    QUEUES.vision,
    async (job) => {
      const parsed = visionJobSchema.safeParse(job.data);
      if (!parsed.success) {
        return { ok: false, attempts: [], error: INVALID_JOB_ERROR };
      }
      // Progress is a courtesy to observers; failing to report it must not fail the analysis.
      const progress = (step: keyof typeof VISION_STEPS) => job.updateProgress({ step, percent: VISION_STEPS[step] }).catch(() => undefined);
      return runVisionWorkflow({ enqueued_at: job.timestamp, ...parsed.data }, job.id ?? parsed.data.request_id, deps, progress);
    },
    { connection: opts.connection, prefix: queuePrefix(deps.namespace), concurrency: opts.concurrency, autorun: true, ...WORKER_RECOVERY },
  );
}
