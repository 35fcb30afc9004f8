import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import type { z } from 'zod';
import { LuaScript } from '../lua';
import { currentTenantShards } from '../config';
import { deleteByPrefix } from '../redis';
import { pipelinePerShard, projectNamespace, tenantShardNamespaces } from '../tenant-shards';
import { type CacheKey, CACHE_KINDS, type CacheKind, tenantPrefix } from './cache-key';
import type { CacheStatus } from './cache-control';
import CLAIM_LOCK from './claim-lock-1.lua';
import RELEASE_LOCK from './release-lock-1.lua';

// Claims for single-flight: identical requests in flight together pay once (see the .lua headers).
const RELEASE = new LuaScript(RELEASE_LOCK);
const CLAIM = new LuaScript(CLAIM_LOCK);

/** A stored answer and when it was stored. */
export interface Cached<T> {
  value: T;
  stored_at: string;
  age_seconds: number;
}

export interface CacheStats {
  kind: CacheKind;
  hits: number;
  misses: number;
  bypasses: number;
  refreshes: number;
  stores: number;
  saved_micros: number;
  hit_ratio: number | null;
}

const STAT_FIELDS: Record<CacheStatus, string> = { HIT: 'hits', MISS: 'misses', BYPASS: 'bypasses', REFRESH: 'refreshes' };

/**
 * The caching service every part uses (gateway answers, the chat worker's RAG context, vision
 * analyses). Entries are keyed by `cacheKey` (tenant first, then a hash of every field that shapes
 * the answer) and hold only complete, successful results: callers store after success and
 * nothing else. Identical requests in flight together pay once: one claims the key in Redis
 * (so across every instance and within one), the others wait for its entry.
 */
/** A tenant shard's overall figures (the system's, summed over the shards). */
const overallStatsKey = (shardNamespace: string) => `${shardNamespace}:cache:stats`;

export class ResponseCache {
  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly shards = currentTenantShards(),
  ) {}

  /** The entry if present, parseable and no older than `maxAgeSeconds`; anything else is a miss. */
  async get<T>(k: CacheKey, schema: z.ZodType<T>, maxAgeSeconds?: number): Promise<Cached<T> | undefined> {
    const raw = await this.redis.get(k.key);
    return raw === null ? undefined : this.read(raw, schema, maxAgeSeconds);
  }

  /** The first of `keys` with a usable entry, and its position. */
  async first<T>(keys: readonly CacheKey[], schema: z.ZodType<T>, maxAgeSeconds?: number): Promise<(Cached<T> & { index: number }) | undefined> {
    if (keys.length === 0) return undefined;
    const raw = await this.redis.mget(keys.map((k) => k.key));
    for (const [index, r] of raw.entries()) {
      const hit = r === null ? undefined : this.read(r, schema, maxAgeSeconds);
      if (hit) return { ...hit, index };
    }
    return undefined;
  }

  private read<T>(raw: string, schema: z.ZodType<T>, maxAgeSeconds?: number): Cached<T> | undefined {
    let json: { v?: unknown; at?: unknown };
    try {
      json = JSON.parse(raw) as { v?: unknown; at?: unknown };
    } catch {
      return undefined;
    }
    if (typeof json.at !== 'string') return undefined;
    const age = Math.max(0, Math.floor((Date.now() - Date.parse(json.at)) / 1000));
    if (!Number.isFinite(age) || (maxAgeSeconds !== undefined && age > maxAgeSeconds)) return undefined;
    const parsed = schema.safeParse(json.v);
    return parsed.success ? { value: parsed.data, stored_at: json.at, age_seconds: age } : undefined;
  }

  /** Stores a complete, successful result for `ttlSeconds` (0 stores nothing). */
  async put<T>(k: CacheKey, value: T, ttlSeconds: number): Promise<void> {
    if (ttlSeconds <= 0) return;
    const [projectKey, overallKey] = this.statsKeys(k.tenant.project);
    await this.redis
      .multi()
      .set(k.key, JSON.stringify({ v: value, at: new Date().toISOString() }), 'EX', ttlSeconds)
      .hincrby(projectKey, `${k.kind}:stores`, 1)
      .hincrby(overallKey, `${k.kind}:stores`, 1)
      .exec();
  }

  /** Counts one lookup's outcome, and on a hit the money it saved, for the project and overall. */
  async record(k: Pick<CacheKey, 'kind' | 'tenant'>, status: CacheStatus, savedMicros = 0): Promise<void> {
    const tx = this.redis.multi();
    for (const key of this.statsKeys(k.tenant.project)) {
      tx.hincrby(key, `${k.kind}:${STAT_FIELDS[status]}`, 1);
      if (savedMicros > 0) tx.hincrby(key, `${k.kind}:saved_micros`, savedMicros);
    }
    await tx.exec();
  }

  /**
   * Claims the right to compute `k`; the token, or undefined while another holds it. A job that
   * runs again after its worker died passes the same owner and takes its own claim back.
   */
  async claim(k: CacheKey, ttlMs: number, owner: string = randomUUID()): Promise<string | undefined> {
    const ok = await CLAIM.run(this.redis, [k.lock], [owner, Math.max(1, Math.ceil(ttlMs))]);
    return ok === 1 ? owner : undefined;
  }

  async release(k: CacheKey, token: string): Promise<void> {
    await RELEASE.run(this.redis, [k.lock], [token]);
  }

  /**
   * Waits while another request computes `k`: its entry once stored, or undefined when it gave up
   * (claim gone, no entry: it failed, and failures are never stored) or `until` passed.
   */
  async awaitOther<T>(k: CacheKey, schema: z.ZodType<T>, until: number, everyMs = 25): Promise<Cached<T> | undefined> {
    while (Date.now() < until) {
      const [[, raw], [, held]] = ((await this.redis.multi().get(k.key).exists(k.lock).exec()) ?? [[null, null], [null, 0]]) as [[unknown, string | null], [unknown, number]];
      if (raw !== null) return this.read(raw, schema);
      if (held === 0) return undefined;
      await new Promise((r) => setTimeout(r, Math.min(everyMs, Math.max(1, until - Date.now()))));
    }
    return undefined;
  }

  /** Every entry of a project (all its users and kinds); the number of keys removed. */
  async purge(project: string): Promise<number> {
    return deleteByPrefix(this.redis, tenantPrefix(this.namespace, project, undefined, this.shards));
  }

  /** Hit ratio and savings per kind, for one project or overall (every shard's overall figures summed). */
  async stats(project?: string): Promise<CacheStats[]> {
    const hashes =
      project !== undefined
        ? [await this.redis.hgetall(this.statsKeys(project)[0])]
        : (await pipelinePerShard(this.redis, tenantShardNamespaces(this.namespace, this.shards), (pipe, ns) => pipe.hgetall(overallStatsKey(ns)))).map(
            ([h]) => h as Record<string, string>,
          );
    const n = (kind: CacheKind, f: string) => hashes.reduce((sum, h) => sum + Number(h[`${kind}:${f}`] ?? 0), 0);
    return CACHE_KINDS.map((kind) => {
      const hits = n(kind, 'hits');
      const misses = n(kind, 'misses');
      return {
        kind,
        hits,
        misses,
        bypasses: n(kind, 'bypasses'),
        refreshes: n(kind, 'refreshes'),
        stores: n(kind, 'stores'),
        saved_micros: n(kind, 'saved_micros'),
        hit_ratio: hits + misses === 0 ? null : hits / (hits + misses),
      };
    });
  }

  /**
   * A project's figures and its shard's overall figures: both in the project's shard, one slot with
   * its entries, so a store or a lookup's record is one MULTI.
   */
  private statsKeys(project: string): [project: string, overall: string] {
    const ns = projectNamespace(this.namespace, project, this.shards);
    return [`${ns}:cache:stats:p:${encodeURIComponent(project)}`, overallStatsKey(ns)];
  }
}
