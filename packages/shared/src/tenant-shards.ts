/**
 * Where per-tenant data lives on a Redis Cluster (analytics rollups so far).
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
import { unitNamespace } from './keys';
import { spreadOverSlots, stableBucket } from './slots';

export const MAX_TENANT_SHARDS = 64;

export function checkTenantShards(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > MAX_TENANT_SHARDS) {
    throw new RangeError(`tenant shards must be an integer 1-${MAX_TENANT_SHARDS}, got ${n}`);
  }
  return n;
}

const layouts = new Map<string, readonly string[]>();

/** The namespace of each of n shards; one shard: the namespace itself. */
export function tenantShardNamespaces(namespace: string, n: number): readonly string[] {
  checkTenantShards(n);
  if (n === 1) return [namespace];
  const cacheKey = `${n}\0${namespace}`;
  const known = layouts.get(cacheKey);
  if (known) return known;
  const out = spreadOverSlots(n, namespace, namespace, (i, k) => {
    const ns = unitNamespace(namespace, `s:${i}:${k}`);
    return { key: ns, value: ns };
  });
  layouts.set(cacheKey, out);
  return out;
}

/** The shard of a project's data (events without a project share the shard of ''). */
export function tenantShardOf(project: string, n: number): number {
  return stableBucket(project, n);
}
