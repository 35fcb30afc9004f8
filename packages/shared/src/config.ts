import { z } from 'zod';
import { TollgateError } from './errors/tollgate-error';
import { MAX_BUS_PARTITIONS } from './bus/partitions';
import { MAX_TENANT_SHARDS } from './tenant-shards';
import { parseClusterNodes } from './redis';

export const PROVIDER_NAMES = ['openai', 'gemini', 'deepseek'] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

const DEFAULT_CHAT_CHAIN_TEXT = 'gemini:gemini-2.0-flash,deepseek:deepseek-chat,openai:gpt-4o-mini';
/** CHAT_FALLBACK_CHAIN's default. */
export const DEFAULT_CHAT_CHAIN: ReadonlyArray<{ provider: ProviderName; model: string }> = DEFAULT_CHAT_CHAIN_TEXT.split(',').map((p) => {
  const [provider, model] = p.split(':') as [ProviderName, string];
  return { provider, model };
});

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ProviderConfig {
  apiKey: string;
  baseUrl: string;
  /** No API key: calls go to the local stub (or to *_BASE_URL) and cost nothing real. */
  stub: boolean;
}

export interface ProviderModel {
  provider: ProviderName;
  model: string;
}

export interface Config {
  nodeEnv: string;
  logLevel: LogLevel;
  redisUrl: string;
  /** Every Redis key is namespaced with it. */
  prefix: string;
  gateway: { host: string; port: number };
  /** Undefined when ADMIN_TOKEN is unset. */
  adminToken: string | undefined;
  stubServer: { host: string; port: number };
  providers: Record<ProviderName, ProviderConfig>;
  /** Every provider is on the stub. */
  stubMode: boolean;
  providerTimeoutMs: number;
  requestDeadlineMs: number;
  maxProviderAttempts: number;
  chatFallbackChain: ProviderModel[];
  /** Output cap sent to the provider when a client sets none; it bounds the hold on hard budgets. */
  chatMaxOutputTokens: number;
  chatMaxOutputTokensByModel: Record<string, number>;
  /** `partitions`: streams the bus is spread over; every service must use the same number. */
  bus: { maxLen: number; maxDeliveries: number; claimIdleMs: number; partitions: number };
  chatWorkerConcurrency: number;
  visionWorkerConcurrency: number;
  /** BullMQ queues the chat and vision queues are each split into; every gateway and worker must use the same number. */
  queuePartitions: number;
  /** Shards per-tenant data (analytics rollups) is split into; every service and tool must use the same number. */
  tenantShards: number;
  /** Per API key. */
  rateLimitPerMinute: number;
  maxBodyBytes: number;
  visionMaxBytes: number;
  visionCacheTtlSeconds: number;
  /** Cache TTL defaults for every project (per-project settings override them); 0 = off unless a request asks. */
  cache: { chat_ttl_seconds: number; rag_ttl_seconds: number; vision_ttl_seconds: number; max_ttl_seconds: number };
  budgets: { dailyMicros: number; weeklyMicros: number; monthlyMicros: number; thresholdsPercent: number[] };
  priceTableFile: string | undefined;
  /** A worker's health/metrics server (containers' probes); undefined when HEALTH_PORT is unset. */
  health: { host: string; port: number } | undefined;
  /** Feature flag snapshots: version poll (fallback for a missed push), age past which evaluations say STALE, Unleash environment. */
  flags: { pollMs: number; maxAgeMs: number; environment: string };
}

/** One error for the whole environment, so an operator fixes every variable in one pass. */
export class ConfigError extends TollgateError {
  readonly problems: { variable: string; message: string }[];

  constructor(problems: { variable: string; message: string }[]) {
    super('invalid_config', `Invalid configuration: ${problems.map((p) => `${p.variable}: ${p.message}`).join('; ')}`, {
      details: problems,
    });
    this.problems = problems;
  }
}

/**
 * BUS_PARTITIONS on a cluster when unset: a multiple of 2 and of 3 masters, so either spreads the
 * bus evenly (a one-node Redis gains nothing from partitions and keeps 1).
 */
export const DEFAULT_CLUSTER_BUS_PARTITIONS = 6;

/** QUEUE_PARTITIONS' limit: each partition costs every worker process a Worker and a blocking connection. */
export const MAX_QUEUE_PARTITIONS = 64;

/**
 * QUEUE_PARTITIONS on a cluster when unset: a multiple of 2 and of 3 masters, so either spreads the
 * queues evenly (one Redis gains nothing from partitions and keeps 1).
 */
export const DEFAULT_CLUSTER_QUEUE_PARTITIONS = 6;

/** TENANT_SHARDS on a cluster when unset: a multiple of 2 and of 3 masters, as for the bus. */
export const DEFAULT_CLUSTER_TENANT_SHARDS = 6;

const REAL_BASE_URLS: Record<ProviderName, string> = {
  openai: 'https://api.openai.com/v1',
  deepseek: 'https://api.deepseek.com/v1',
  gemini: 'https://generativelanguage.googleapis.com',
};
const STUB_PATHS: Record<ProviderName, string> = { openai: '/openai/v1', deepseek: '/deepseek/v1', gemini: '/gemini' };
export const STUB_API_KEY = 'stub-key';

// Integers are echoed back in errors because they are never secret; strings (tokens, URLs with passwords) are not.
const shown = (raw: string): string => JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}...` : raw);

function int(def: number, min: number, max: number = Number.MAX_SAFE_INTEGER, what?: string) {
  const expected = what ?? (max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer ${min}-${max}`);
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined) return def;
      const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n) || n < min || n > max) {
        ctx.addIssue({ code: 'custom', message: `expected ${expected}, got ${shown(raw)}` });
        return z.NEVER;
      }
      return n;
    });
}

const port = (def: number) => int(def, 1, 65535, 'a port number 1-65535');
/** A port that may stay unset: what it serves is then not started. */
const optionalPort = port(0).transform((n) => (n === 0 ? undefined : n));

function str(def: string, pattern: RegExp, expected: string) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const value = raw ?? def;
      if (!pattern.test(value)) {
        ctx.addIssue({ code: 'custom', message: `expected ${expected}` });
        return z.NEVER;
      }
      return value;
    });
}

function url(protocols: readonly string[], expected: string) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined) return undefined;
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        ctx.addIssue({ code: 'custom', message: `expected ${expected}` });
        return z.NEVER;
      }
      if (!protocols.includes(parsed.protocol)) {
        ctx.addIssue({ code: 'custom', message: `expected ${expected}` });
        return z.NEVER;
      }
      // SDKs join paths onto the base URL; a trailing slash would double it.
      return raw.replace(/\/+$/, '');
    });
}

const optionalSecret = z.string().optional();
const host = (def: string) => str(def, /^[A-Za-z0-9._:[\]-]+$/, 'a host name or IP address');
const httpUrl = url(['http:', 'https:'], 'an http(s) URL');

const EnvSchema = z.object({
  NODE_ENV: z.string().optional().transform((v) => v ?? 'development'),
  LOG_LEVEL: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const value = raw ?? 'info';
      if (!(LOG_LEVELS as readonly string[]).includes(value)) {
        ctx.addIssue({ code: 'custom', message: `expected one of ${LOG_LEVELS.join('|')}, got ${shown(value)}` });
        return z.NEVER;
      }
      return value as LogLevel;
    }),
  REDIS_URL: url(['redis:', 'rediss:'], 'a redis:// or rediss:// URL').transform((v) => v ?? 'redis://127.0.0.1:6379'),
  // Read by createRedis (every connection); checked here so a typo is named at start-up.
  REDIS_CLUSTER_NODES: z
    .string()
    .optional()
    .superRefine((v, ctx) => {
      if (v === undefined || v.trim() === '') return;
      try {
        parseClusterNodes(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `comma-separated host:port of cluster nodes: ${(err as Error).message}` });
      }
    }),
  // Colons and braces are reserved for the key layout and Redis Cluster hash tags.
  TOLLGATE_PREFIX: str('tollgate', /^[A-Za-z0-9_.-]{1,64}$/, '1-64 characters of A-Z a-z 0-9 _ . -'),
  GATEWAY_HOST: host('127.0.0.1'),
  GATEWAY_PORT: port(8080),
  ADMIN_TOKEN: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw !== undefined && raw.length < 16) {
        ctx.addIssue({ code: 'custom', message: 'must be at least 16 characters when set' });
        return z.NEVER;
      }
      return raw;
    }),
  STUB_HOST: host('127.0.0.1'),
  STUB_PORT: port(4010),
  OPENAI_API_KEY: optionalSecret,
  OPENAI_BASE_URL: httpUrl,
  GEMINI_API_KEY: optionalSecret,
  GEMINI_BASE_URL: httpUrl,
  DEEPSEEK_API_KEY: optionalSecret,
  DEEPSEEK_BASE_URL: httpUrl,
  PROVIDER_TIMEOUT_MS: int(30_000, 1),
  REQUEST_DEADLINE_MS: int(60_000, 1),
  MAX_PROVIDER_ATTEMPTS: int(3, 1, 20),
  CHAT_FALLBACK_CHAIN: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const value = raw ?? DEFAULT_CHAT_CHAIN_TEXT;
      const chain: ProviderModel[] = [];
      const problems: string[] = [];
      for (const part of value.split(',').map((s) => s.trim())) {
        const match = /^([a-z]+):([A-Za-z0-9][A-Za-z0-9._:-]*)$/.exec(part);
        const provider = match?.[1];
        const model = match?.[2];
        if (!provider || !model) problems.push(`"${part}" is not provider:model`);
        else if (!(PROVIDER_NAMES as readonly string[]).includes(provider)) problems.push(`unknown provider "${provider}"`);
        else if (chain.some((c) => c.provider === provider && c.model === model)) problems.push(`"${part}" is listed twice`);
        else chain.push({ provider: provider as ProviderName, model });
      }
      if (problems.length) {
        ctx.addIssue({
          code: 'custom',
          message: `expected a comma-separated list of provider:model with provider one of ${PROVIDER_NAMES.join('|')} (${problems.join(', ')})`,
        });
        return z.NEVER;
      }
      return chain;
    }),
  CHAT_OUTPUT_CAP: int(4096, 1, 100_000),
  CHAT_OUTPUT_CAP_BY_MODEL: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const caps: Record<string, number> = {};
      for (const part of (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
        const m = /^([A-Za-z0-9][A-Za-z0-9._:-]*)=(\d{1,6})$/.exec(part);
        const n = Number(m?.[2]);
        if (!m || n < 1 || n > 100_000) {
          ctx.addIssue({ code: 'custom', message: `expected model=tokens pairs separated by commas, tokens 1-100000 ("${part}")` });
          return z.NEVER;
        }
        caps[m[1]!] = n;
      }
      return caps;
    }),
  BUS_MAX_LEN: int(10_000, 1),
  BUS_MAX_DELIVERIES: int(5, 1),
  BUS_CLAIM_IDLE_MS: int(30_000, 1),
  // Unset: 1 on one Redis, DEFAULT_CLUSTER_BUS_PARTITIONS on a cluster (see loadConfig).
  BUS_PARTITIONS: int(0, 1, MAX_BUS_PARTITIONS).transform((n) => (n === 0 ? undefined : n)),
  // A chat job mostly waits on its provider (seconds per call in production), so one worker holds many.
  CHAT_WORKER_CONCURRENCY: int(200, 1, 1000),
  VISION_WORKER_CONCURRENCY: int(4, 1, 1000),
  // Unset: 1 on one Redis, DEFAULT_CLUSTER_QUEUE_PARTITIONS on a cluster (see loadConfig).
  QUEUE_PARTITIONS: int(0, 1, MAX_QUEUE_PARTITIONS).transform((n) => (n === 0 ? undefined : n)),
  // Unset: 1 on one Redis, DEFAULT_CLUSTER_TENANT_SHARDS on a cluster (see loadConfig).
  TENANT_SHARDS: int(0, 1, MAX_TENANT_SHARDS).transform((n) => (n === 0 ? undefined : n)),
  RATE_LIMIT_PER_MINUTE: int(600, 1),
  MAX_BODY_BYTES: int(1_048_576, 1),
  VISION_MAX_BYTES: int(8_388_608, 1),
  VISION_CACHE_TTL_SECONDS: int(3600, 1),
  CACHE_CHAT_TTL_SECONDS: int(0, 0, 30 * 86_400),
  CACHE_RAG_TTL_SECONDS: int(300, 0, 30 * 86_400),
  CACHE_MAX_TTL_SECONDS: int(86_400, 0, 30 * 86_400),
  BUDGET_DAILY_MICROS: int(50_000_000, 0),
  BUDGET_WEEKLY_MICROS: int(300_000_000, 0),
  BUDGET_MONTHLY_MICROS: int(1_000_000_000, 0),
  BUDGET_THRESHOLDS: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const parts = (raw ?? '50,80,100').split(',').map((s) => s.trim());
      const values = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
      if (values.some((v) => !Number.isInteger(v) || v < 1 || v > 1000)) {
        ctx.addIssue({ code: 'custom', message: `expected comma-separated integer percentages 1-1000, got ${shown(raw ?? '')}` });
        return z.NEVER;
      }
      return [...new Set(values)].sort((a, b) => a - b);
    }),
  PRICE_TABLE_FILE: z.string().optional(),
  // Workers' /healthz, /readyz and /metrics for container probes; the gateway serves its own on GATEWAY_PORT.
  HEALTH_HOST: host('127.0.0.1'),
  HEALTH_PORT: optionalPort,
  FLAGS_POLL_MS: int(2_000, 50),
  FLAGS_MAX_AGE_MS: int(30_000, 100),
  FLAGS_ENVIRONMENT: str('default', /^[A-Za-z0-9._-]{1,100}$/, 'an Unleash environment name (letters, digits, . _ -)'),
});

function resolveProvider(
  name: ProviderName,
  apiKey: string | undefined,
  baseUrl: string | undefined,
  stubOrigin: string,
): ProviderConfig {
  if (apiKey) return { apiKey, baseUrl: baseUrl ?? REAL_BASE_URLS[name], stub: false };
  return { apiKey: STUB_API_KEY, baseUrl: baseUrl ?? `${stubOrigin}${STUB_PATHS[name]}`, stub: true };
}

/**
 * Reads and validates the environment. Empty strings count as unset, because compose files and
 * `.env` templates routinely declare `VAR=` meaning "use the default".
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string> = {};
  for (const key of Object.keys(EnvSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value.trim() !== '') input[key] = value.trim();
  }
  const parsed = EnvSchema.safeParse(input);
  if (!parsed.success) {
    const problems = new Map<string, string[]>();
    for (const issue of parsed.error.issues) {
      const variable = String(issue.path[0] ?? '(environment)');
      problems.set(variable, [...(problems.get(variable) ?? []), issue.message]);
    }
    throw new ConfigError([...problems].map(([variable, messages]) => ({ variable, message: messages.join(', ') })));
  }
  const e = parsed.data;
  const stubHost = e.STUB_HOST.includes(':') && !e.STUB_HOST.startsWith('[') ? `[${e.STUB_HOST}]` : e.STUB_HOST;
  const stubOrigin = `http://${stubHost}:${e.STUB_PORT}`;
  const providers: Record<ProviderName, ProviderConfig> = {
    openai: resolveProvider('openai', e.OPENAI_API_KEY, e.OPENAI_BASE_URL, stubOrigin),
    gemini: resolveProvider('gemini', e.GEMINI_API_KEY, e.GEMINI_BASE_URL, stubOrigin),
    deepseek: resolveProvider('deepseek', e.DEEPSEEK_API_KEY, e.DEEPSEEK_BASE_URL, stubOrigin),
  };
  return {
    nodeEnv: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    redisUrl: e.REDIS_URL,
    prefix: e.TOLLGATE_PREFIX,
    gateway: { host: e.GATEWAY_HOST, port: e.GATEWAY_PORT },
    adminToken: e.ADMIN_TOKEN,
    stubServer: { host: e.STUB_HOST, port: e.STUB_PORT },
    providers,
    stubMode: PROVIDER_NAMES.every((p) => providers[p].stub),
    providerTimeoutMs: e.PROVIDER_TIMEOUT_MS,
    requestDeadlineMs: e.REQUEST_DEADLINE_MS,
    maxProviderAttempts: e.MAX_PROVIDER_ATTEMPTS,
    chatFallbackChain: e.CHAT_FALLBACK_CHAIN,
    chatMaxOutputTokens: e.CHAT_OUTPUT_CAP,
    chatMaxOutputTokensByModel: e.CHAT_OUTPUT_CAP_BY_MODEL,
    bus: {
      maxLen: e.BUS_MAX_LEN,
      maxDeliveries: e.BUS_MAX_DELIVERIES,
      claimIdleMs: e.BUS_CLAIM_IDLE_MS,
      partitions: e.BUS_PARTITIONS ?? (e.REDIS_CLUSTER_NODES?.trim() ? DEFAULT_CLUSTER_BUS_PARTITIONS : 1),
    },
    chatWorkerConcurrency: e.CHAT_WORKER_CONCURRENCY,
    visionWorkerConcurrency: e.VISION_WORKER_CONCURRENCY,
    queuePartitions: e.QUEUE_PARTITIONS ?? (e.REDIS_CLUSTER_NODES?.trim() ? DEFAULT_CLUSTER_QUEUE_PARTITIONS : 1),
    tenantShards: e.TENANT_SHARDS ?? (e.REDIS_CLUSTER_NODES?.trim() ? DEFAULT_CLUSTER_TENANT_SHARDS : 1),
    rateLimitPerMinute: e.RATE_LIMIT_PER_MINUTE,
    maxBodyBytes: e.MAX_BODY_BYTES,
    visionMaxBytes: e.VISION_MAX_BYTES,
    visionCacheTtlSeconds: e.VISION_CACHE_TTL_SECONDS,
    cache: {
      chat_ttl_seconds: e.CACHE_CHAT_TTL_SECONDS,
      rag_ttl_seconds: e.CACHE_RAG_TTL_SECONDS,
      vision_ttl_seconds: e.VISION_CACHE_TTL_SECONDS,
      max_ttl_seconds: e.CACHE_MAX_TTL_SECONDS,
    },
    budgets: {
      dailyMicros: e.BUDGET_DAILY_MICROS,
      weeklyMicros: e.BUDGET_WEEKLY_MICROS,
      monthlyMicros: e.BUDGET_MONTHLY_MICROS,
      thresholdsPercent: e.BUDGET_THRESHOLDS,
    },
    priceTableFile: e.PRICE_TABLE_FILE,
    health: e.HEALTH_PORT === undefined ? undefined : { host: e.HEALTH_HOST, port: e.HEALTH_PORT },
    flags: { pollMs: e.FLAGS_POLL_MS, maxAgeMs: e.FLAGS_MAX_AGE_MS, environment: e.FLAGS_ENVIRONMENT },
  };
}

/**
 * BUS_PARTITIONS as the services resolve it (REDIS_CLUSTER_NODES sets the default), for tools
 * that read the bus beside them (CLI, scripts, benches) and must not be stopped by other variables.
 */
export function busPartitionsFrom(env: NodeJS.ProcessEnv = process.env): number {
  return loadConfig({ BUS_PARTITIONS: env.BUS_PARTITIONS, REDIS_CLUSTER_NODES: env.REDIS_CLUSTER_NODES }).bus.partitions;
}

/**
 * QUEUE_PARTITIONS as the services resolve it (REDIS_CLUSTER_NODES sets the default), for tools
 * that read the queues beside them (scripts, test harnesses) and must not be stopped by other variables.
 */
export function queuePartitionsFrom(env: NodeJS.ProcessEnv = process.env): number {
  return loadConfig({ QUEUE_PARTITIONS: env.QUEUE_PARTITIONS, REDIS_CLUSTER_NODES: env.REDIS_CLUSTER_NODES }).queuePartitions;
}

/** TENANT_SHARDS as the services resolve it (REDIS_CLUSTER_NODES sets the default), for readers in tools and tests. */
export function tenantShardsFrom(env: NodeJS.ProcessEnv = process.env): number {
  return loadConfig({ TENANT_SHARDS: env.TENANT_SHARDS, REDIS_CLUSTER_NODES: env.REDIS_CLUSTER_NODES }).tenantShards;
}

let shardsMemo: { env: string; n: number } | undefined;

/** tenantShardsFrom(process.env) for callers on the request path: parsed again only when those variables change. */
export function currentTenantShards(): number {
  const env = `${process.env.TENANT_SHARDS ?? ''}\0${process.env.REDIS_CLUSTER_NODES ?? ''}`;
  if (shardsMemo?.env !== env) shardsMemo = { env, n: tenantShardsFrom() };
  return shardsMemo.n;
}

// Base URLs can carry credentials (https://user:pass@proxy) or key query params; print origin and path only.
function printableUrl(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** One start-up log line saying where each provider's calls go; never includes key material. */
export function describeProviders(config: Pick<Config, 'providers'>): string {
  const parts = PROVIDER_NAMES.map((name) => {
    const p = config.providers[name];
    const target = printableUrl(p.baseUrl);
    if (!p.stub) return `${name} -> ${target}`;
    const envKey = `${name.toUpperCase()}_API_KEY`;
    return `${name} -> stub at ${target} (no ${envKey})`;
  });
  return `providers: ${parts.join(', ')}`;
}
