import { retryDelayFor, type BackoffOptions } from '../errors/backoff';
import { type Classification, classify } from '../errors/classify';
import { DeadlineExceededError } from '../errors/provider-errors';
import type { BreakerRegistry } from '../resilience/breakers';
import type { Target } from './types';

export interface AttemptRecord {
  provider: string;
  model: string;
  /** 1-based attempt on this provider. */
  attempt: number;
  outcome: 'ok' | 'error';
  category?: Classification['category'];
  code?: string;
  durationMs: number;
  /** Wait before the next attempt on the same provider. */
  retryInMs?: number;
}

/** After a failed attempt: the same provider again, the next provider, or give up. */
export type RecoveryDecision = 'retry' | 'fallback' | 'fail';

export interface RecoveryOptions {
  breakers: BreakerRegistry;
  /** Breaker key part: `chat`, `vision`. */
  operation: string;
  /** Total budget for every attempt and wait, across providers. */
  deadlineMs: number;
  /** Upper bound for one provider call. */
  callTimeoutMs: number;
  /** Attempts per provider for retryable failures (rate limit, timeout, network). */
  maxAttempts: number;
  /** The caller's own cancellation (client went away). */
  signal?: AbortSignal;
  backoff?: BackoffOptions;
  /** Every failed attempt and what recovery does next, for workflow records and `error.occurred`. */
  onError?: (error: unknown, c: Classification, target: Target, decision: RecoveryDecision) => void;
}

export interface RecoveryOutcome<T> {
  value: T;
  target: Target;
  attempts: AttemptRecord[];
  fallbackUsed: boolean;
}

/** The error that ended recovery, with every attempt that led there. */
export class RecoveryFailedError extends Error {
  readonly code = 'recovery_failed';
  constructor(
    readonly last: unknown,
    readonly attempts: AttemptRecord[],
  ) {
    super('Every provider attempt failed', { cause: last });
    this.name = 'RecoveryFailedError';
  }
}

const RETRY_SAME_PROVIDER = new Set(['rate_limit', 'timeout', 'network']);
// A different provider may well serve what this one could not; the user's own mistakes it cannot fix.
const FALLBACK_CATEGORIES = new Set(['rate_limit', 'timeout', 'network', 'provider_unavailable', 'authentication']);

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });

/**
 * The one place provider calls are retried. Each attempt runs through the provider's breaker with
 * its own timeout; retryable failures back off (honouring Retry-After) on the same provider, then
 * the chain falls back to the next provider; everything is bounded by one total deadline. SDK
 * retries are off, so attempts never multiply.
 */
export async function withRecovery<T>(
  chain: readonly Target[],
  call: (target: Target, signal: AbortSignal) => Promise<T>,
  opts: RecoveryOptions,
): Promise<RecoveryOutcome<T>> {
  const deadline = Date.now() + opts.deadlineMs;
  const attempts: AttemptRecord[] = [];
  // Built only when needed: an error captures a stack trace, a cost every successful call would pay.
  let last: unknown;

  for (const [index, target] of chain.entries()) {
    for (let attempt = 1; attempt <= opts.maxAttempts; attempt++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new RecoveryFailedError(new DeadlineExceededError('The request deadline passed during recovery', { cause: last }), attempts);
      const started = Date.now();
      const timeout = AbortSignal.timeout(Math.min(remaining, opts.callTimeoutMs));
      const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
      try {
        const value = await opts.breakers.fire(target.provider, opts.operation, () => call(target, signal));
        attempts.push({ provider: target.provider, model: target.model, attempt, outcome: 'ok', durationMs: Date.now() - started });
        return { value, target, attempts, fallbackUsed: index > 0 };
      } catch (error) {
        last = error;
        if (opts.signal?.aborted) throw new RecoveryFailedError(error, attempts);
        const c = classify(error);
        const record: AttemptRecord = {
          provider: target.provider, model: target.model, attempt, outcome: 'error', category: c.category, code: c.code, durationMs: Date.now() - started,
        };
        attempts.push(record);
        const wait = retryDelayFor(c, attempt - 1, opts.backoff);
        const decision: RecoveryDecision =
          !FALLBACK_CATEGORIES.has(c.category) || c.code === 'internal_error'
            ? 'fail'
            : RETRY_SAME_PROVIDER.has(c.category) && c.strategy !== 'circuit_break' && attempt < opts.maxAttempts && Date.now() + wait < deadline
              ? 'retry'
              : index < chain.length - 1
                ? 'fallback'
                : 'fail';
        opts.onError?.(error, c, target, decision);
        if (decision === 'fail') throw new RecoveryFailedError(error, attempts);
        if (decision === 'fallback') break;
        record.retryInMs = wait;
        await sleep(wait, opts.signal);
      }
    }
  }
  throw new RecoveryFailedError(last ?? new DeadlineExceededError('No provider attempt fitted in the deadline'), attempts);
}
