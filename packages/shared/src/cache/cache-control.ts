import { TollgateError } from '../errors/tollgate-error';

/**
 * What the client asked of the cache for one request:
 * - `Cache-Control: no-store`: bypass, neither read nor written;
 * - `no-cache`: refresh, not read, the fresh answer written;
 * - `max-age=N`: an answer at most N s old is fine, and a new one is kept N s (capped by the
 *   project's limit). It turns caching on for kinds that are off by default (chat answers).
 * - `x-tollgate-cache-namespace`: a partition of the tenant's entries.
 */
export interface CacheDirective {
  mode: 'default' | 'refresh' | 'bypass';
  maxAgeSeconds?: number;
  partition: string;
}

export const CACHE_STATUSES = ['HIT', 'MISS', 'BYPASS', 'REFRESH'] as const;
export type CacheStatus = (typeof CACHE_STATUSES)[number];

/** A malformed cache header is the client's mistake: a 400 in the gateway's error shape. */
export class CacheDirectiveError extends TollgateError {
  constructor(message: string) {
    super('invalid_request', message);
  }
}

const PARTITION = /^[A-Za-z0-9._-]{1,64}$/;
const MAX_AGE_LIMIT = 365 * 86_400;

export function parseCacheDirective(cacheControl: string | undefined, partitionHeader: string | undefined): CacheDirective {
  const partition = partitionHeader?.trim() || 'default';
  if (!PARTITION.test(partition)) throw new CacheDirectiveError('x-tollgate-cache-namespace must be 1-64 letters, digits, dot, dash or underscore.');
  const out: CacheDirective = { mode: 'default', partition };
  for (const raw of (cacheControl ?? '').split(',')) {
    const part = raw.trim().toLowerCase();
    if (!part) continue;
    if (part === 'no-store') out.mode = 'bypass';
    else if (part === 'no-cache' && out.mode !== 'bypass') out.mode = 'refresh';
    else if (part.startsWith('max-age=')) {
      const value = part.slice('max-age='.length).replace(/^"|"$/g, '');
      if (!/^\d{1,10}$/.test(value)) throw new CacheDirectiveError('Cache-Control max-age must be a whole number of seconds.');
      out.maxAgeSeconds = Math.min(Number(value), MAX_AGE_LIMIT);
    }
    // Other directives (max-stale, only-if-cached, ...) do not apply here and are ignored, as HTTP caches do.
  }
  return out;
}
