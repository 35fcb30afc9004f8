/**
 * Where per-tenant data lives on a Redis Cluster (analytics rollups, the ledger's entries and
 * detail, cache entries and stats).
 *
 * Data that a script writes for many tenants at once (a bus read's rollups) cannot take one slot
 * per tenant, and under one slot for all it sits on one master. So it is split into N shards, each
 * a namespace with a tag of its own (`unitNamespace(namespace, 's:<i>:<k>')`, so `{tollgate:s:2:7}`)
 * whose slot lies in the i-th of N equal slot ranges, as the bus's partitions do. A tenant's data
 * is all in the shard its project hashes to (FNV-1a: every process and release agrees), so a
 * tenant's reads touch one shard and a redelivered event lands where its first delivery did;
 * reads across tenants merge every shard (counters and sketch bins add up).
 *
 * One shard is the namespace itself, in whichever range its slot falls: with TENANT_SHARDS=1 every
 * key is what it was before shards existed. Every service and tool must use the same number: a
 * reader with fewer shards misses data, and changing it under running writers splits a tenant's
 * figures across two shards that only the old number reads together.
 */
import type Redis from 'ioredis';
import type { ChainableCommander } from 'ioredis';
import { checkUnitCount, stableBucket, unitNamespaces } from './slots';

export const MAX_TENANT_SHARDS = 64;

export function checkTenantShards(n: number): number {
  return checkUnitCount('tenant shards', n, MAX_TENANT_SHARDS);
}

/** The namespace of each of n shards; one shard: the namespace itself. */
export function tenantShardNamespaces(namespace: string, n: number): readonly string[] {
  return unitNamespaces(namespace, 's', checkTenantShards(n));
}

/** The shard of a project's data (events without a project share the shard of ''). */
export function tenantShardOf(project: string, n: number): number {
  return stableBucket(project, n);
}

/** The namespace of the shard a project's data is in. */
export function projectNamespace(namespace: string, project: string, n: number): string {
  return tenantShardNamespaces(namespace, n)[tenantShardOf(project, n)]!;
}

/** The positions of `items` by the shard of each one's project: a batch split into one write per shard. */
export function groupByShard<T>(items: readonly T[], projectOf: (item: T) => string, n: number): Map<number, number[]> {
  const byShard = new Map<number, number[]>();
  items.forEach((item, i) => {
    const s = tenantShardOf(projectOf(item), n);
    const list = byShard.get(s);
    if (list) list.push(i);
    else byShard.set(s, [i]);
  });
  return byShard;
}

/** The shards a read touches: the named projects' when it names them, else all. */
export function shardsFor<T>(projects: readonly string[] | undefined, shards: readonly T[]): readonly T[] {
  if (!projects || projects.length === 0 || shards.length === 1) return shards;
  return [...new Set(projects.map((p) => tenantShardOf(p, shards.length)))].sort((a, b) => a - b).map((i) => shards[i]!);
}

/**
 * One pipeline per shard, filled by `fill` and sent at once (a cluster's pipelines stay in one
 * slot): per shard, its replies in order; a failed command throws.
 */
export async function pipelinePerShard<T>(redis: Redis, shards: readonly T[], fill: (pipe: ChainableCommander, shard: T) => void): Promise<unknown[][]> {
  return Promise.all(
    shards.map(async (shard) => {
      const pipe = redis.pipeline();
      fill(pipe, shard);
      return ((await pipe.exec()) ?? []).map(([err, v]) => {
        if (err) throw err;
        return v;
      });
    }),
  );
}
