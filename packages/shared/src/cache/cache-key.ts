import { createHash } from 'node:crypto';
import stringify from 'safe-stable-stringify';
import { currentTenantShards } from '../config';
import { projectNamespace } from '../tenant-shards';

/** What a cache entry is: its TTL default and its stats are per kind. */
export const CACHE_KINDS = ['chat', 'rag', 'vision'] as const;
export type CacheKind = (typeof CACHE_KINDS)[number];

/** Whose entry it is. Every key starts with it, so no lookup can ever reach another tenant's answer. */
export interface Tenant {
  project: string;
  user: string;
}

// Ids may hold ':' and glob characters; encoded, a tenant segment can neither run into the next
// one nor match more than itself in a purge's SCAN pattern.
const enc = (s: string) => encodeURIComponent(s).replace(/\*/g, '%2A');

/**
 * Canonical JSON of everything that shapes an answer: keys sorted at every depth, `undefined`
 * dropped, so the same request always hashes the same whatever order its fields came in.
 * (safe-stable-stringify, also under winston; canonicalize is ESM-only.)
 */
export function canonicalJson(shape: unknown): string {
  return stringify(shape) ?? 'null';
}

export function shapeHash(shape: unknown): string {
  return createHash('sha256').update(canonicalJson(shape)).digest('hex');
}

/**
 * Where the tenant's entries live: purge by project deletes everything under it. `namespace` is
 * the system's; the entries are in the project's tenant shard (tenant-shards.ts), so on a cluster
 * different projects' entries sit on different masters and one project's in one slot.
 */
export function tenantPrefix(namespace: string, project: string, user?: string, shards = currentTenantShards()): string {
  return `${projectNamespace(namespace, project, shards)}:cache:t:${enc(project)}:${user === undefined ? '' : `${enc(user)}:`}`;
}

export interface CacheKey {
  /** The entry. */
  key: string;
  /** The in-flight claim of whoever is computing it. */
  lock: string;
  hash: string;
  tenant: Tenant;
  kind: CacheKind;
}

/**
 * tenant (project, user) first, then the kind, the client's partition
 * (`x-tollgate-cache-namespace`) and the hash of the canonical request.
 */
export function cacheKey(namespace: string, tenant: Tenant, kind: CacheKind, partition: string, shape: unknown, shards = currentTenantShards()): CacheKey {
  const hash = shapeHash(shape);
  const key = `${tenantPrefix(namespace, tenant.project, tenant.user, shards)}${kind}:${enc(partition)}:${hash}`;
  return { key, lock: `${key}:lock`, hash, tenant, kind };
}
