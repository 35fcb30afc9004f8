import CircuitBreaker from 'opossum';
import { classify } from '../errors/classify';
import { CircuitOpenError, DeadlineExceededError } from '../errors/provider-errors';
import { TollgateError } from '../errors/tollgate-error';

export type BreakerState = 'closed' | 'open' | 'half_open';
export type CircuitEventType = 'circuit.opened' | 'circuit.closed';

export interface CircuitEventData {
  breaker: string;
  provider: string;
  operation: string;
  failures: number;
  reason: string;
}

export type BreakerPublish = (type: CircuitEventType, data: CircuitEventData) => Promise<unknown> | void;

export interface BreakerOptions {
  /** Failure percentage in the rolling window above which the breaker opens. Default 50. */
  errorThresholdPercentage?: number;
  /** Calls in the window before the breaker may open at all. Default 3. */
  volumeThreshold?: number;
  /** How long an open breaker waits before letting one probe through. Default 10000. */
  resetTimeout?: number;
  rollingCountTimeout?: number;
  /** Per-call timeout; default false because callers pass their own deadline. */
  timeout?: number | false;
}

export interface BreakerRegistryOptions {
  publish?: BreakerPublish;
  options?: BreakerOptions;
}

export interface BreakerSnapshot {
  breaker: string;
  provider: string;
  operation: string;
  state: BreakerState;
  failures: number;
  successes: number;
  rejects: number;
}

type Thunk = () => Promise<unknown>;

interface Entry {
  key: string;
  provider: string;
  operation: string;
  breaker: CircuitBreaker<[Thunk], unknown>;
  /** An opening was announced (by us or a peer) and no closing since: half-open re-opens stay quiet. */
  incidentOpen: boolean;
  /** Set while applying a peer's event so our listeners do not echo it back. */
  remote: boolean;
  lastReason: string;
}

/** Only failures that say something about the provider's health may open a breaker. */
function countsAsFailure(error: unknown): boolean {
  const c = classify(error);
  if (c.code === 'internal_error' || c.code === 'circuit_open') return false;
  return c.category === 'provider_unavailable' || c.category === 'timeout' || c.category === 'network';
}

function hasCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

/**
 * One opossum breaker per `${provider}:${operation}`. State changes on the failing call itself,
 * is announced through `publish`, and peers' announcements are applied with `applyRemote`.
 */
export class BreakerRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly publish?: BreakerPublish;
  private readonly options: Required<BreakerOptions>;
  private closed = false;

  constructor(opts?: BreakerRegistryOptions) {
    this.publish = opts?.publish;
    this.options = {
      errorThresholdPercentage: opts?.options?.errorThresholdPercentage ?? 50,
      volumeThreshold: opts?.options?.volumeThreshold ?? 3,
      resetTimeout: opts?.options?.resetTimeout ?? 10_000,
      rollingCountTimeout: opts?.options?.rollingCountTimeout ?? 10_000,
      timeout: opts?.options?.timeout ?? false,
    };
  }

  async fire<T>(provider: string, operation: string, fn: () => Promise<T>): Promise<T> {
    const entry = this.entry(provider, operation);
    try {
      return (await entry.breaker.fire(fn)) as T;
    } catch (error) {
      if (CircuitBreaker.isOurError(error as Error)) {
        if (hasCode(error, 'EOPENBREAKER')) throw new CircuitOpenError(entry.key, { cause: error });
        if (hasCode(error, 'ETIMEDOUT')) {
          throw new DeadlineExceededError(`Breaker ${entry.key} timed out`, { cause: error });
        }
      }
      throw error;
    }
  }

  state(provider: string, operation: string): BreakerState {
    const entry = this.entries.get(BreakerRegistry.key(provider, operation));
    return entry ? stateOf(entry.breaker) : 'closed';
  }

  snapshot(): BreakerSnapshot[] {
    return [...this.entries.values()].map((e) => {
      const stats = e.breaker.stats;
      return {
        breaker: e.key,
        provider: e.provider,
        operation: e.operation,
        state: stateOf(e.breaker),
        failures: stats.failures,
        successes: stats.successes,
        rejects: stats.rejects,
      };
    });
  }

  /** A peer's `circuit.opened`/`circuit.closed`: change local state without publishing again. */
  applyRemote(type: CircuitEventType, data: Pick<CircuitEventData, 'provider' | 'operation'> & Partial<CircuitEventData>): void {
    if (this.closed) return;
    const entry = this.entry(data.provider, data.operation);
    entry.remote = true;
    try {
      if (type === 'circuit.opened') {
        entry.incidentOpen = true;
        if (!entry.breaker.opened) entry.breaker.open();
      } else {
        entry.incidentOpen = false;
        if (!entry.breaker.closed) entry.breaker.close();
      }
    } finally {
      entry.remote = false;
    }
  }

  shutdown(): void {
    this.closed = true;
    for (const e of this.entries.values()) e.breaker.shutdown();
    this.entries.clear();
  }

  static key(provider: string, operation: string): string {
    return `${provider}:${operation}`;
  }

  private entry(provider: string, operation: string): Entry {
    if (this.closed) throw new TollgateError('registry_shutdown', 'Breaker registry has been shut down');
    const key = BreakerRegistry.key(provider, operation);
    const existing = this.entries.get(key);
    if (existing) return existing;

    const breaker = new CircuitBreaker<[Thunk], unknown>((thunk: Thunk) => thunk(), {
      name: key,
      errorThresholdPercentage: this.options.errorThresholdPercentage,
      volumeThreshold: this.options.volumeThreshold,
      resetTimeout: this.options.resetTimeout,
      rollingCountTimeout: this.options.rollingCountTimeout,
      timeout: this.options.timeout,
      // opossum's filter means "do not count": e.g. a 400 says nothing about the provider's health.
      errorFilter: (error: unknown) => !countsAsFailure(error),
      enableSnapshots: false,
    });
    const entry: Entry = { key, provider, operation, breaker, incidentOpen: false, remote: false, lastReason: 'unknown' };

    breaker.on('failure', (error: unknown) => {
      entry.lastReason = classify(error).code;
    });
    breaker.on('open', () => {
      if (entry.remote || entry.incidentOpen) return;
      entry.incidentOpen = true;
      this.emit('circuit.opened', entry, entry.lastReason);
    });
    breaker.on('close', () => {
      if (entry.remote || !entry.incidentOpen) return;
      entry.incidentOpen = false;
      this.emit('circuit.closed', entry, 'probe_succeeded');
    });

    this.entries.set(key, entry);
    return entry;
  }

  /** Publishing is best effort: a bus outage must never break the call that tripped the breaker. */
  private emit(type: CircuitEventType, entry: Entry, reason: string): void {
    if (!this.publish) return;
    const data: CircuitEventData = {
      breaker: entry.key,
      provider: entry.provider,
      operation: entry.operation,
      failures: entry.breaker.stats.failures,
      reason,
    };
    try {
      const result = this.publish(type, data);
      if (result && typeof (result as Promise<unknown>).then === 'function') {
        (result as Promise<unknown>).then(undefined, () => undefined);
      }
    } catch {
      // Swallowed on purpose; see above.
    }
  }
}

function stateOf(breaker: CircuitBreaker<[Thunk], unknown>): BreakerState {
  if (breaker.opened) return 'open';
  if (breaker.halfOpen) return 'half_open';
  return 'closed';
}
