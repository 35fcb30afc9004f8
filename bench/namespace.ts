import { busPartitionPattern, type createRedis, deleteByPrefix, scanKeys } from '../packages/shared/src';

type Redis = ReturnType<typeof createRedis>;

/**
 * Deletes a run's keys: everything under its namespace, and the bus partitions the services made
 * there, whose hash tags are their own so the namespace's pattern misses them.
 */
export async function deleteNamespace(redis: Redis, ns: string): Promise<void> {
  await deleteByPrefix(redis, ns);
  for await (const keys of scanKeys(redis, busPartitionPattern(ns))) {
    for (const key of keys) await redis.unlink(key);
  }
}
