import { MAX_RETRY_AFTER_MS, type Classification } from './classify';

export interface BackoffOptions {
  /** Delay scale for attempt 0 (ms). Default 200. */
  baseMs?: number;
  /** Upper bound of the exponential window (ms). Default 10000. */
  capMs?: number;
  /** Uniform [0, 1) source; injectable so tests are deterministic. */
  random?: () => number;
}

/**
 * Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)).
 * Full jitter spreads retries of many clients that failed together, instead of re-synchronising them.
 */
export function backoffDelay(attempt: number, opts?: BackoffOptions): number {
  const base = opts?.baseMs ?? 200;
  const cap = opts?.capMs ?? 10_000;
  const random = opts?.random ?? Math.random;
  const n = Math.max(0, Math.floor(attempt));
  const window = Math.min(cap, base * 2 ** n);
  const r = Math.min(Math.max(random(), 0), 1);
  // random() may return exactly 1 from a stub: stay below the window.
  return Math.min(Math.floor(r * window), Math.max(0, Math.ceil(window) - 1));
}

/** The server's Retry-After wins over our own schedule (it knows its reset); it is bounded at 60 s, not by capMs. */
export function retryDelayFor(c: Classification, attempt: number, opts?: BackoffOptions): number {
  if (c.retryAfterMs !== undefined) return Math.min(Math.max(0, c.retryAfterMs), MAX_RETRY_AFTER_MS);
  return backoffDelay(attempt, opts);
}
