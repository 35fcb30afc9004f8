import Redis, { Cluster, type ClusterNode, type RedisOptions } from 'ioredis';
import { namespaceGlobs } from './keys';
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
export function createRedis(
  url: string,
  options: { blocking?: boolean; name?: string; logger?: RedisErrorSink; nodes?: ClusterNode[] | null } & RedisOptions = {},
): Redis {
  // `nodes: null` means the one node at `url` even when REDIS_CLUSTER_NODES is set (a probe of a given address).
  const { blocking, name, logger, nodes: given, ...rest } = options;
  const nodes = given === undefined ? clusterNodes() : given;
  if (nodes) return reportErrors(createCluster(nodes, url, { connectionName: name, maxRetriesPerRequest: blocking ? null : 20, ...rest }), logger ?? stderrSink);
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
 * The Redis Cluster to use instead of one node: `REDIS_CLUSTER_NODES=host:port,...` (any of its
 * masters; the rest are discovered). Unset, every connection goes to `REDIS_URL` as before.
 */
export function clusterNodes(env: NodeJS.ProcessEnv = process.env): ClusterNode[] | null {
  const raw = env.REDIS_CLUSTER_NODES?.trim();
  if (!raw) return null;
  try {
    return parseClusterNodes(raw);
  } catch (err) {
    throw new TypeError(`REDIS_CLUSTER_NODES: ${(err as Error).message}`);
  }
}

/** `host:port,...` (IPv6 hosts in brackets) as nodes; throws naming the first entry that is not. */
export function parseClusterNodes(raw: string): ClusterNode[] {
  return raw.split(',').map((hp) => {
    const m = /^\s*\[?([^\]\s]+?)\]?:(\d{1,5})\s*$/.exec(hp);
    if (!m) throw new TypeError(`"${hp}" is not host:port`);
    return { host: m[1]!, port: Number(m[2]) };
  });
}

/** Whether this connection is a Redis Cluster (scans, shard reports and the like go per master). */
export function isCluster(redis: Redis): boolean {
  return (redis as unknown as { isCluster?: boolean }).isCluster === true;
}

/**
 * A cluster connection typed as a `Redis`: every command the services send has the same shape on
 * both, and the few that do not (SCAN, which walks one node) go through `mastersOf`. Credentials
 * and TLS come from REDIS_URL, so one secret configures either.
 */
function createCluster(nodes: ClusterNode[], url: string, redisOptions: RedisOptions): Redis {
  const u = new URL(url);
  const cluster = new Cluster(nodes, {
    redisOptions: {
      ...redisOptions,
      enableAutoPipelining: false,
      username: u.username ? decodeURIComponent(u.username) : undefined,
      password: u.password ? decodeURIComponent(u.password) : undefined,
      tls: u.protocol === 'rediss:' ? {} : undefined,
    },
    scaleReads: 'master',
    // A cluster connects on its own unless told not to, as one node does; `connect()` then works.
    lazyConnect: redisOptions.lazyConnect ?? false,
    clusterRetryStrategy: (times) => Math.min(times * 100, 2_000),
    // Ride out a master's restart as one node's connection does (its commands wait up to 20
    // retries): without this a command failed after 16 redirections 100 ms apart, and a worker
    // that had been answered by the provider could not record the usage (the cluster reliability
    // run: three billed calls with no ledger entry while one master restarted for 2.7 s).
    maxRedirections: 100,
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 200,
    // Never on a cluster: ioredis groups an automatic pipeline by the slot of a command's first
    // argument, which for a script called with its key count first (the ledger's batch) or for
    // EVALSHA (redis/ioredis#2109) is not a key, so commands for different masters meet in one
    // pipeline and all fail ("All keys in the pipeline should belong to the same slots allocation
    // group"): the cluster reliability run lost acks and dead-lettered 154 ledger writes to it.
    enableAutoPipelining: false,
  });
  return cluster as unknown as Redis;
}

/** A flat `[field, value, ...]` reply (XINFO STREAM, XINFO GROUPS entries) as an object. */
export function fieldsOf(flat: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (Array.isArray(flat)) for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}

/** The nodes holding data: the one node, or each master of a cluster. */
export function mastersOf(redis: Redis): Redis[] {
  return isCluster(redis) ? (redis as unknown as Cluster).nodes('master') : [redis];
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
    const name = isCluster(client) ? (client as unknown as Cluster).options.redisOptions?.connectionName : client.options.connectionName;
    sink.warn(`redis${name ? ` (${name})` : ''}: ${message}; reconnecting`);
  });
  const duplicate = client.duplicate.bind(client);
  client.duplicate = isCluster(client)
    ? () => reportErrors((duplicate as unknown as () => Redis)(), sink, everyMs)
    : (override?: Partial<RedisOptions>) => reportErrors(duplicate(override), sink, everyMs);
  return client;
}

/** Deletes every key under a prefix (tests and dev resets); SCAN, never KEYS, so a big keyspace is not blocked. */
export async function deleteByPrefix(redis: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  for await (const keys of scanKeys(redis, namespaceGlobs(prefix))) {
    // One UNLINK per key: on a cluster the keys of a page sit in many slots.
    const pipe = redis.pipeline();
    for (const key of keys) pipe.unlink(key);
    for (const [err, n] of (await pipe.exec()) ?? []) if (!err) deleted += Number(n);
  }
  return deleted;
}

/** Pages of the keys matching a glob, over every master of a cluster (SCAN walks one node). */
export async function* scanKeys(redis: Redis, pattern: string | readonly string[], count = 1000): AsyncGenerator<string[]> {
  // A cluster connection knows its masters only once connected: a fresh one would scan nothing.
  if (isCluster(redis)) await redis.ping();
  for (const node of mastersOf(redis)) {
    for (const glob of typeof pattern === 'string' ? [pattern] : pattern) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', glob, 'COUNT', count);
        cursor = next;
        if (keys.length > 0) yield keys;
      } while (cursor !== '0');
    }
  }
}
