import Redis, { type RedisOptions } from 'ioredis';

/**
 * A Redis connection that survives a Redis restart: it reconnects with capped backoff instead of
 * crashing. `blocking` connections (BullMQ workers, QueueEvents, stream readers) must not fail
 * commands while reconnecting, so they wait (`maxRetriesPerRequest: null`).
 */
export function createRedis(url: string, options: { blocking?: boolean; name?: string } & RedisOptions = {}): Redis {
  const { blocking, name, ...rest } = options;
  return new Redis(url, {
    connectionName: name,
    maxRetriesPerRequest: blocking ? null : 20,
    retryStrategy: (times) => Math.min(times * 100, 2_000),
    ...rest,
  });
}

/** Deletes every key under a prefix (tests and dev resets); SCAN, never KEYS, so a big keyspace is not blocked. */
export async function deleteByPrefix(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}
