import type { Processor, Worker } from 'bullmq';
import type Redis from 'ioredis';
import { WORKER_RECOVERY } from '../jobs';
import { queuePartitionPrefixes, splitConcurrency } from './partitions';
import { type SupervisedWorkerOptions, SupervisedWorker } from './supervised-worker';

export interface PartitionedWorkerOptions {
  namespace: string;
  partitions: number;
  /** Shared by every partition's Worker for its non-blocking commands; each duplicates it for its blocking fetch. */
  connection: Redis;
  /** The process's jobs at once, over all partitions. */
  concurrency: number;
  /** Stored on each job it runs (BullMQ's `processedBy`): which replica served a request. */
  name?: string;
  /** See SupervisedWorker: a partition's Worker that stops fetching is replaced. */
  watchMs?: number;
  onReplaced?: SupervisedWorkerOptions['onReplaced'];
}

/**
 * A process's consumer of every partition of one request queue: one BullMQ Worker per partition,
 * each with WORKER_RECOVERY's locks and stalled checks, so the jobs of a process killed mid-run
 * are put back on their partition by whichever process still reads it. With one partition this
 * is exactly the one Worker the services ran before partitions.
 */
export class PartitionedWorker<D, R> {
  readonly partitions: ReadonlyArray<SupervisedWorker<D, R>>;
  /** Each partition's share of the concurrency (see `splitConcurrency`). */
  readonly concurrency: readonly number[];

  constructor(name: string, processor: Processor<D, R>, opts: PartitionedWorkerOptions) {
    const prefixes = queuePartitionPrefixes(opts.namespace, opts.partitions);
    this.concurrency = splitConcurrency(opts.concurrency, prefixes.length);
    // Fewer slots than partitions: each partition still needs a Worker of concurrency 1, so what
    // runs at once is held to the configured total here. A job past the total waits in this process,
    // its lock renewed, until one of the running jobs ends.
    const run = this.concurrency.length > opts.concurrency ? limited(processor, opts.concurrency) : processor;
    this.partitions = prefixes.map(
      (prefix, i) =>
        new SupervisedWorker<D, R>(name, run, {
          connection: opts.connection,
          prefix,
          concurrency: this.concurrency[i]!,
          ...(opts.name && { name: opts.name }),
          ...(opts.watchMs && { watchMs: opts.watchMs }),
          ...(opts.onReplaced && { onReplaced: opts.onReplaced }),
          ...WORKER_RECOVERY,
        }),
    );
  }

  /** Each partition's current BullMQ Worker. */
  get workers(): ReadonlyArray<Worker<D, R>> {
    return this.partitions.map((p) => p.worker);
  }

  on(event: 'error', listener: (err: Error) => void): this {
    for (const p of this.partitions) p.on(event, listener);
    return this;
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all(this.partitions.map((p) => p.waitUntilReady()));
  }

  /** Stops fetching on every partition and waits for the running jobs (unless `force`). */
  async close(force = false): Promise<void> {
    await Promise.all(this.partitions.map((p) => p.close(force)));
  }
}

/** The processor with at most `max` runs of it at once; the others wait their turn in order. */
function limited<D, R>(processor: Processor<D, R>, max: number): Processor<D, R> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (...args) => {
    if (running >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    else running++;
    try {
      return await processor(...args);
    } finally {
      // The slot passes straight to the next waiter, so `running` never dips and lets a newcomer past it.
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}
