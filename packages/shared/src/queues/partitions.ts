/**
 * Where the request queues' partitions live, which partition a job goes to, and how a worker
 * process shares its concurrency among them.
 *
 * BullMQ keeps a queue in one hash tag (its scripts touch many of its keys at once), so a queue is
 * one slot of one master. With N partitions the `chat` queue is N BullMQ queues of the same name,
 * each under a prefix with a tag of its own (`unitNamespace(namespace, 'q:<i>:<k>')`, so
 * `{tollgate:q:2:7}:q`), with `k` the first counter that puts the tag's slot in the i-th of N equal
 * slot ranges. `redis-cli --cluster create` gives each master an equal run of slots, so with N a
 * multiple of the master count every master holds N / masters partitions. (A reshard moves slots,
 * not keys: the spread holds for an evenly split cluster, which is what a new one is.)
 *
 * One partition is the home queue, today's prefix `queuePrefix(namespace)`, in whichever range its
 * slot falls (so on the master it would be on anyway). With QUEUE_PARTITIONS=1 it is the only one
 * and every key, name and command is what it was before partitions existed; raising the count
 * keeps the queue and what waits in it, and a gateway still on one partition during a rolling
 * change adds to a queue the new workers read.
 */
import { MAX_QUEUE_PARTITIONS } from '../config';
import { queuePrefix } from '../jobs';
import { checkUnitCount, stableBucket, unitNamespaces } from '../slots';

export { rangeOfSlot, slotRange } from '../slots';

export function checkQueuePartitions(n: number): number {
  return checkUnitCount('queue partitions', n, MAX_QUEUE_PARTITIONS);
}

/** The BullMQ prefix of each of a namespace's n queue partitions; one partition: `queuePrefix(namespace)`. */
export function queuePartitionPrefixes(namespace: string, n: number): readonly string[] {
  return unitNamespaces(namespace, 'q', checkQueuePartitions(n)).map(queuePrefix);
}

/**
 * The partition a job id goes to: a stable hash (FNV-1a), so an add retried with the same id
 * reaches the same partition, where BullMQ's own id check makes it a no-op. Stable across processes
 * and releases: gateways of two releases must agree during a rolling deploy.
 */
export function queuePartitionOf(jobId: string, n: number): number {
  return stableBucket(jobId, n);
}

/**
 * A process's concurrency shared out among its n partition workers: as even as it goes (the first
 * `total % n` get one more), never below 1, since a partition nobody reads is never served. With
 * fewer slots than partitions that is n in all, more than `total`; `PartitionedWorker` then
 * holds the jobs that run at once to `total` itself.
 */
export function splitConcurrency(total: number, n: number): number[] {
  if (!Number.isInteger(total) || total < 1) throw new RangeError(`concurrency must be an integer >= 1, got ${total}`);
  checkQueuePartitions(n);
  const base = Math.floor(total / n);
  const extra = total % n;
  return Array.from({ length: n }, (_, i) => Math.max(1, base + (i < extra ? 1 : 0)));
}
