import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import type Redis from 'ioredis';
import { type PartitionedQueue, type VisionJob, type VisionJobResult, visionImageKey } from '@tollgate/shared';
import { ApiError } from './errors';
import { JobWaiter, JobWaitTimeoutError } from './job-waiter';

/** What a route supplies: the job without its plumbing, plus the image bytes themselves. */
export type VisionJobInput = Omit<VisionJob, 'deadline_at' | 'image_key'> & { image: Buffer };

/** Past the deadline the worker refuses the job anyway; the bytes only need to outlive it a little. */
const UPLOAD_GRACE_MS = 30_000;

/**
 * Hands vision work to the `vision` queue (the partition its job id hashes to) and waits for its
 * outcome with a deadline. The image travels beside the job, under its own key with a TTL, and is
 * removed once the job is settled.
 */
export class VisionDispatcher {
  private readonly waiter: JobWaiter<VisionJobResult>;

  constructor(
    private readonly queue: PartitionedQueue<VisionJob, VisionJobResult>,
    /** Index for index with `queue.partitions`. */
    events: readonly QueueEvents[],
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly deadlineMs: number,
  ) {
    this.waiter = new JobWaiter(events, (jobId) => queue.partitionOf(jobId));
  }

  async run(input: VisionJobInput): Promise<VisionJobResult> {
    const { image, ...fields } = input;
    const deadlineAt = Date.now() + this.deadlineMs;
    const imageKey = randomUUID();
    const key = visionImageKey(this.namespace, imageKey);
    await this.redis.set(key, image, 'PX', this.deadlineMs + UPLOAD_GRACE_MS);
    try {
      // A small margin past the job's own deadline so the worker's classified answer wins the race.
      return await this.waiter.run(
        (jobId) => this.queue.add('vision', { ...fields, image_key: imageKey, deadline_at: deadlineAt }, { jobId }),
        this.deadlineMs + 2_000,
      );
    } catch (err) {
      if (err instanceof JobWaitTimeoutError) {
        throw new ApiError('deadline_exceeded', 'The analysis did not complete within its deadline. Please try again.');
      }
      throw err;
    } finally {
      await this.redis.del(key).catch(() => undefined);
    }
  }
}
