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
  resolve(result: R): void;
  reject(error: Error): void;
}

/**
 * Waits for the jobs this process adds, keyed by a job id it chooses, on one pair of QueueEvents
 * listeners. The waiter exists before its job does, so no completion can slip past it and no
 * status read is needed: BullMQ's `waitUntilFinished` adds listeners and reads the job's state
 * from Redis on every call, a round trip per request on the busiest path.
 */
export class JobWaiter<R> {
  private readonly waiting = new Map<string, Waiter<R>>();

  constructor(events: QueueEvents) {
    events.on('completed', ({ jobId, returnvalue }) => this.take(jobId)?.resolve(returnvalue as unknown as R));
    events.on('failed', ({ jobId, failedReason }) => this.take(jobId)?.reject(new Error(failedReason)));
  }

  /** Jobs being waited for now (for tests and metrics). */
  get size(): number {
    return this.waiting.size;
  }

  /** Adds a job under a fresh id with `add` and resolves with its result; rejects on failure or timeout. */
  async run(add: (jobId: string) => Promise<unknown>, timeoutMs: number): Promise<R> {
    const jobId = randomUUID();
    const result = new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(jobId);
        reject(new JobWaitTimeoutError(timeoutMs));
      }, timeoutMs);
      const settle = <A>(fn: (a: A) => void) => (a: A) => {
        clearTimeout(timer);
        fn(a);
      };
      this.waiting.set(jobId, { resolve: settle(resolve), reject: settle(reject) });
    });
    try {
      await add(jobId);
    } catch (err) {
      this.take(jobId)?.reject(err as Error);
    }
    return result;
  }

  private take(jobId: string): Waiter<R> | undefined {
    const w = this.waiting.get(jobId);
    if (w) this.waiting.delete(jobId);
    return w;
  }
}
