import { randomUUID } from 'node:crypto';
import { type DefaultJobOptions, type Job, type JobsOptions, type JobType, Queue, QueueEvents } from 'bullmq';
import type Redis from 'ioredis';
import { queuePartitionOf, queuePartitionPrefixes } from './partitions';

/** What reports a queue's depth (gateway /metrics, the ops status): a BullMQ Queue or a partitioned one. */
export interface JobCountSource {
  readonly name: string;
  getJobCounts(...types: JobType[]): Promise<Record<string, number>>;
}

export interface PartitionedQueueOptions {
  /** The app namespace (hash-tagged); the partitions' prefixes come from it. */
  namespace: string;
  partitions: number;
  /** Shared by every partition's Queue (non-blocking commands only). */
  connection: Redis;
  defaultJobOptions?: DefaultJobOptions;
}

/**
 * One request queue (`chat`, `vision`) spread over N BullMQ queues of the same name, each in a
 * Redis Cluster slot of its own (see partitions.ts). A job goes to the partition its id hashes to,
 * so adding it again with the same id reaches the same BullMQ queue and is a no-op there, as on
 * one queue. Depths and counts are summed over the partitions under the one name.
 */
/** A BullMQ Queue of plain data D and result R (its generics spelled out, so names are plain strings). */
export type RequestQueue<D, R> = Queue<D, R, string, D, R, string>;

export class PartitionedQueue<D, R> implements JobCountSource {
  readonly partitions: ReadonlyArray<RequestQueue<D, R>>;

  constructor(
    readonly name: string,
    opts: PartitionedQueueOptions,
  ) {
    this.partitions = queuePartitionPrefixes(opts.namespace, opts.partitions).map(
      (prefix) => new Queue<D, R, string, D, R, string>(name, { connection: opts.connection, prefix, ...(opts.defaultJobOptions && { defaultJobOptions: opts.defaultJobOptions }) }),
    );
  }

  partitionOf(jobId: string): number {
    return queuePartitionOf(jobId, this.partitions.length);
  }

  /**
   * Adds a job to its id's partition. Without an id a partitioned queue picks a random one:
   * BullMQ's own ids count per queue, so two partitions would hand out the same ids. One
   * partition keeps BullMQ's ids, as before.
   */
  add(jobName: string, data: D, opts: JobsOptions = {}): Promise<Job<D, R>> {
    const jobId = opts.jobId ?? (this.partitions.length > 1 ? randomUUID() : undefined);
    if (jobId === undefined) return this.partitions[0]!.add(jobName, data, opts);
    return this.partitions[this.partitionOf(jobId)]!.add(jobName, data, { ...opts, jobId });
  }

  /** The job with this id, from the partition it was added to. */
  async getJob(jobId: string): Promise<Job<D, R> | undefined> {
    return this.partitions[this.partitionOf(jobId)]!.getJob(jobId);
  }

  /** Every job in these states, partition after partition (no order across partitions). */
  async getJobs(types: JobType[]): Promise<Array<Job<D, R>>> {
    const pages = await Promise.all(this.partitions.map((q) => q.getJobs(types)));
    return pages.flat();
  }

  async getJobCounts(...types: JobType[]): Promise<Record<string, number>> {
    return sumCounts(await Promise.all(this.partitions.map((q) => q.getJobCounts(...types))));
  }

  /** Jobs waiting or delayed, as BullMQ's `count`, over every partition. */
  async count(): Promise<number> {
    return (await Promise.all(this.partitions.map((q) => q.count()))).reduce((a, b) => a + b, 0);
  }

  async close(): Promise<void> {
    await Promise.all(this.partitions.map((q) => q.close()));
  }
}

function sumCounts(all: Array<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const counts of all) for (const [state, n] of Object.entries(counts)) out[state] = (out[state] ?? 0) + n;
  return out;
}

/**
 * One QueueEvents per partition of a queue, index for index with `PartitionedQueue.partitions`.
 * BullMQ duplicates the connection for each (an XREAD BLOCK of its own); a stream in one slot
 * can only be read by its own command.
 */
export function partitionedQueueEvents(name: string, opts: { namespace: string; partitions: number; connection: Redis; autorun?: boolean }): QueueEvents[] {
  return queuePartitionPrefixes(opts.namespace, opts.partitions).map(
    (prefix) => new QueueEvents(name, { connection: opts.connection, prefix, ...(opts.autorun !== undefined && { autorun: opts.autorun }) }),
  );
}
