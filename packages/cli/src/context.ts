import type Redis from 'ioredis';
import { CliError, colorEnabled, Output } from './format';
import { ConfigError, createRedis, hashTagged, loadConfig } from './shared';

/** Options every command accepts (set on the program, usable after the command too). */
export interface GlobalOptions {
  redisUrl?: string;
  prefix?: string;
  color?: boolean;
  json?: boolean;
}

export interface Context {
  redis: Redis;
  /** Key namespace the services use: the prefix, hash-tagged. */
  namespace: string;
  /** The bus's partitions, as the services resolve BUS_PARTITIONS. */
  busPartitions: number;
  out: Output;
  /** Resolves when the command should stop following (Ctrl-C, SIGTERM). */
  stopped: Promise<void>;
  close(): Promise<void>;
}

const FLAG_OF: Record<string, string> = { REDIS_URL: '--redis-url', TOLLGATE_PREFIX: '--prefix' };

/**
 * REDIS_URL and TOLLGATE_PREFIX from the flags or the environment, and the bus's partitions
 * (BUS_PARTITIONS, whose default REDIS_CLUSTER_NODES sets), checked by the services' own rules.
 */
export function resolveTarget(opts: GlobalOptions, env: NodeJS.ProcessEnv = process.env): { redisUrl: string; namespace: string; busPartitions: number } {
  const input = {
    REDIS_URL: opts.redisUrl ?? env.REDIS_URL,
    TOLLGATE_PREFIX: opts.prefix ?? env.TOLLGATE_PREFIX,
    BUS_PARTITIONS: env.BUS_PARTITIONS,
    REDIS_CLUSTER_NODES: env.REDIS_CLUSTER_NODES,
  };
  try {
    // Only the variables the CLI needs: an unrelated bad variable must not stop an operator tool.
    const config = loadConfig(input);
    return { redisUrl: config.redisUrl, namespace: hashTagged(config.prefix), busPartitions: config.bus.partitions };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const flagValue: Record<string, string | undefined> = { REDIS_URL: opts.redisUrl, TOLLGATE_PREFIX: opts.prefix };
    throw new CliError(err.problems.map((p) => `${flagValue[p.variable] !== undefined ? FLAG_OF[p.variable] : p.variable}: ${p.message}`).join('; '));
  }
}

/** host:port only: a Redis URL can carry a password. */
function where(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 6379}`;
  } catch {
    return 'the configured Redis';
  }
}

/**
 * Connects, failing fast with one clear line when Redis is not there. A command that follows a
 * stream (`follow`) then rides out a Redis restart by reconnecting; a one-shot command gives up.
 */
export async function openContext(opts: GlobalOptions, follow = false): Promise<Context> {
  const { redisUrl, namespace, busPartitions } = resolveTarget(opts);
  let connected = false;
  const redis = createRedis(redisUrl, {
    name: 'tollgate-cli',
    // Errors surface through the failing command (below), as one line of the CLI's own.
    logger: { warn: () => undefined },
    lazyConnect: true,
    connectTimeout: 5_000,
    maxRetriesPerRequest: follow ? null : 1,
    retryStrategy: (times) => (connected && (follow || times <= 3) ? Math.min(times * 200, 2_000) : null),
  });
  let lastError: NodeJS.ErrnoException | undefined;
  redis.on('error', (err: NodeJS.ErrnoException) => (lastError = err));
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    const code = lastError?.code ?? (err as NodeJS.ErrnoException).code ?? lastError?.message;
    throw new CliError(`Cannot reach Redis at ${where(redisUrl)} (${code ?? (err as Error).message}); set --redis-url or REDIS_URL.`);
  }
  connected = true;

  // Following commands stop cleanly on Ctrl-C; one-shot ones keep Node's default (exit at once).
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  if (follow) {
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  }

  const out = new Output(opts.json === true, colorEnabled(process.stdout, process.env, opts.color !== false));
  return {
    redis,
    namespace,
    busPartitions,
    out,
    stopped,
    close: async () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      // QUIT would wait for a Redis that is down (follow mode retries forever): then just drop it.
      if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
      else redis.disconnect();
    },
  };
}

/** Runs a command body with a connection that is always closed afterwards. */
export async function withContext(opts: GlobalOptions, body: (ctx: Context) => Promise<void>, follow = false): Promise<void> {
  const ctx = await openContext(opts, follow);
  try {
    await body(ctx);
  } finally {
    await ctx.close();
  }
}
