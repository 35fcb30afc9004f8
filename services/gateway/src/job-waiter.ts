import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';

/** The job did not finish within the time the caller allowed. */
export class JobWaitTimeoutError extends Error {
  readonly code = 'job_wait_timeout';
  constructor(timeoutMs: number) {
    super(`the job did not finish within ${timeoutMs} ms`);
    this.name = 'JobWaitTimeoutError';
  }
}

interface Waiter<R> {
  /** The queue partition the job was added to: only that partition's events settle it. */
  partition: number;
  resolve(result: R): void;
  reject(error: Error): void;
}

/**
 * Waits for the jobs this process adds, keyed by a job id it chooses, on one pair of QueueEvents
 * listeners per queue partition. The waiter exists before its job does, so no completion can slip
 * past it and no status read is needed: BullMQ's `waitUntilFinished` adds listeners and reads the
 * job's state from Redis on every call, a round trip per request on the busiest path.
 */
export class JobWaiter<R> {
  private readonly waiting = new Map<string, Waiter<R>>();

  /**
   * `events[i]` is partition i's QueueEvents; `partitionOf` says which partition a job id is added
   * to (the queue's own placement), so one partition's waits never see another's events.
   */
  constructor(
    events: readonly QueueEvents[],
    private readonly partitionOf: (jobId: string) => number = () => 0,
  ) {
    events.forEach((e, partition) => {
      e.on('completed', ({ jobId, returnvalue }) => this.take(jobId, partition)?.resolve(returnvalue as unknown as R));
      e.on('failed', ({ jobId, failedReason }) => this.take(jobId, partition)?.reject(new Error(failedReason)));
    });
  }

  /** Jobs being waited for now (for tests and metrics). */
  get size(): number {
    return this.waiting.size;
  }

  /** Adds a job under a fresh id with `add` and resolves with its result; rejects on failure or timeout. */
  async run(add: (jobId: string) => Promise<unknown>, timeoutMs: number): Promise<R> {
    const jobId = randomUUID();
    const partition = this.partitionOf(jobId);
    const result = new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(jobId);
        reject(new JobWaitTimeoutError(timeoutMs));
      }, timeoutMs);
      const settle = <A>(fn: (a: A) => void) => (a: A) => {
        clearTimeout(timer);
        fn(a);
      };
      this.waiting.set(jobId, { partition, resolve: settle(resolve), reject: settle(reject) });
    });
    try {
      await add(jobId);
    } catch (err) {
      this.take(jobId, partition)?.reject(err as Error);
    }
    return result;
  }

  private take(jobId: string, partition: number): Waiter<R> | undefined {
    const w = this.waiting.get(jobId);
    if (!w || w.partition !== partition) return undefined;
    this.waiting.delete(jobId);
    return w;
  }
}
