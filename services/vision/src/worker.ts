import type Redis from 'ioredis';
import { INVALID_JOB_ERROR, PartitionedWorker, type PartitionedWorkerOptions, QUEUES, type VisionJob, type VisionJobResult, visionJobSchema } from '@tollgate/shared';
import { runVisionWorkflow, VISION_STEPS, type VisionDeps } from './vision-workflow';

export interface VisionWorkerOptions {
  /** A connection with `maxRetriesPerRequest: null`, as BullMQ workers require. */
  connection: Redis;
  /** Jobs at once in this process, over every partition. */
  concurrency: number;
  /** QUEUE_PARTITIONS: the vision queue's partitions, every one of which this worker reads; default 1. */
  partitions?: number;
  /** Told when a partition's Worker stopped fetching and was replaced (see SupervisedWorker). */
  onReplaced?: PartitionedWorkerOptions['onReplaced'];
}

/**
 * The `vision` queue's worker, one BullMQ Worker per partition. Bad job data is answered as an
 * invalid request, not thrown: a throw would make BullMQ retry something that can never succeed.
 * Only infrastructure failures (Redis) throw, and a crashed worker's job is picked up again by
 * BullMQ's stalled-job check.
 */
export function createVisionWorker(deps: VisionDeps, opts: VisionWorkerOptions): PartitionedWorker<VisionJob, VisionJobResult> {
  return new PartitionedWorker<VisionJob, VisionJobResult>(
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
    { connection: opts.connection, namespace: deps.namespace, partitions: opts.partitions ?? 1, concurrency: opts.concurrency, ...(opts.onReplaced && { onReplaced: opts.onReplaced }) },
  );
}
