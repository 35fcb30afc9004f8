import Redis, { type RedisOptions } from 'ioredis';
import { redactString } from './logger';

/** Where connection errors are reported; a service passes its logger. */
export interface RedisErrorSink {
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

const stderrSink: RedisErrorSink = { warn: (message) => void process.stderr.write(`${message}\n`) };

/**
 * A Redis connection that survives a Redis restart: it reconnects with capped backoff instead of
 * crashing. `blocking` connections (BullMQ workers, QueueEvents, stream readers) must not fail
 * commands while reconnecting, so they wait (`maxRetriesPerRequest: null`). Its errors, and those
 * of every connection duplicated from it, are reported as one line per distinct error every 10 s.
 */
export function createRedis(url: string, options: { blocking?: boolean; name?: string; logger?: RedisErrorSink } & RedisOptions = {}): Redis {
  const { blocking, name, logger, ...rest } = options;
  return reportErrors(
    new Redis(url, {
      connectionName: name,
      maxRetriesPerRequest: blocking ? null : 20,
      retryStrategy: (times) => Math.min(times * 100, 2_000),
      ...rest,
    }),
    logger ?? stderrSink,
  );
}

/**
 * Without an `error` listener ioredis prints a full stack for every failed reconnect: a Redis
 * outage would bury the logs. This reports each distinct error once per `everyMs` per connection,
 * redacted, and does the same for the connections `duplicate()` makes (stream readers, BullMQ's
 * blocking connections), which do not inherit listeners.
 */
export function reportErrors(client: Redis, sink: RedisErrorSink, everyMs = 10_000): Redis {
  const last = new Map<string, number>();
  client.on('error', (err: Error) => {
    const message = redactString(err.message);
    const now = Date.now();
    if ((last.get(message) ?? -Infinity) + everyMs > now) return;
    last.set(message, now);
    sink.warn(`redis${client.options.connectionName ? ` (${client.options.connectionName})` : ''}: ${message}; reconnecting`);
  });
  const duplicate = client.duplicate.bind(client);
  client.duplicate = (override?: Partial<RedisOptions>) => reportErrors(duplicate(override), sink, everyMs);
  return client;
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
