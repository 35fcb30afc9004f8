import type Redis from 'ioredis';
import { EventTail } from '../bus/event-tail';
import { FlagEngine, type FlagContext, type FlagEvaluation } from './engine';
import type { Feature } from './model';
import { FlagStore } from './store';

/** What flag-reading code depends on: a snapshot in the services, a bare engine in unit tests. */
export interface FlagReader {
  evaluate(name: string, context?: FlagContext): FlagEvaluation;
  /** The flag's definition, for planning before the subject is known (every variant a request may get). */
  definition(name: string): Feature | undefined;
}

export interface FlagSnapshotOptions {
  redis: Redis;
  namespace: string;
  /** Older than this since the last confirmed sync, evaluations say `STALE` (values still from the snapshot). */
  maxAgeMs: number;
  /** How often the version is checked when no push arrives; the fallback for a missed `flags.changed`. */
  pollMs: number;
  /** Fills `appName`/`environment` when a context leaves them out, as the Unleash SDK does. */
  appName?: string;
  environment?: string;
  logger?: { warn(message: string, meta?: Record<string, unknown>): unknown };
  now?: () => number;
  /**
   * False: the process already follows the bus and calls `notify` for each `flags.changed`
   * (the gateway's metrics tail does), so the snapshot opens no tail and connection of its own.
   */
  follow?: boolean;
  /** The bus's partitions, for the tail that follows `flags.changed`; default 1. */
  busPartitions?: number;
}

/**
 * Every service's local copy of the flags. Evaluations read memory only; a `flags.changed` on the
 * bus (every instance follows it, no consumer group) or the poll finding a newer version reloads
 * the whole store in one read and swaps the engine.
 */
export class FlagSnapshot implements FlagReader {
  private engine: FlagEngine;
  private loadedVersion = -1;
  private syncedAt = 0;
  private readonly store: FlagStore;
  private readonly tail?: EventTail;
  private readonly now: () => number;
  private pollTimer?: NodeJS.Timeout;
  private reloading?: Promise<void>;
  private again = false;
  private stopped = false;

  constructor(private readonly opts: FlagSnapshotOptions) {
    this.store = new FlagStore(opts.redis, opts.namespace);
    this.now = opts.now ?? Date.now;
    this.engine = this.build([], []);
    if (opts.follow !== false) {
      this.tail = new EventTail({ redis: opts.redis, prefix: opts.namespace, partitions: opts.busPartitions, types: 'flags.changed', lingerMs: 100 }, (event) => {
        if (event.type === 'flags.changed') this.notify(event.data.version);
      });
    }
  }

  /** A `flags.changed` announced `version`: reload unless that is the one loaded. */
  notify(version: number): void {
    if (version !== this.loadedVersion) void this.refresh();
  }

  /** Loads the flags once, then follows changes. A Redis that is down at start only delays the first load. */
  async start(): Promise<void> {
    await this.tail?.start();
    await this.refresh();
    this.schedulePoll();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    await this.tail?.stop();
    await this.reloading;
  }

  get version(): number {
    return this.loadedVersion;
  }

  /** Milliseconds since the snapshot was last confirmed current. */
  get ageMs(): number {
    return this.syncedAt === 0 ? Number.POSITIVE_INFINITY : this.now() - this.syncedAt;
  }

  get stale(): boolean {
    return this.ageMs > this.opts.maxAgeMs;
  }

  evaluate(name: string, context?: FlagContext): FlagEvaluation {
    const result = this.engine.evaluate(name, context);
    if (result.reason !== 'ERROR' && this.ageMs > this.opts.maxAgeMs) result.reason = 'STALE';
    return result;
  }

  definition(name: string): Feature | undefined {
    return this.engine.definition(name);
  }

  /** Reloads now (coalesced: calls during a reload cause one more reload after it). */
  refresh(): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      do {
        this.again = false;
        try {
          const state = await this.store.load();
          if (state.version !== this.loadedVersion) {
            this.engine = this.build(state.flags, state.segments);
            this.loadedVersion = state.version;
          }
          this.syncedAt = this.now();
        } catch (err) {
          this.opts.logger?.warn('flag snapshot reload failed; evaluating from the last one', { error: (err as Error).message });
        }
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private build(flags: ConstructorParameters<typeof FlagEngine>[0]['features'], segments: ConstructorParameters<typeof FlagEngine>[0]['segments']): FlagEngine {
    return new FlagEngine({ features: flags, segments }, { ...(this.opts.appName && { appName: this.opts.appName }), ...(this.opts.environment && { environment: this.opts.environment }) });
  }

  private schedulePoll(): void {
    if (this.stopped) return;
    this.pollTimer = setTimeout(() => void this.poll().finally(() => this.schedulePoll()), this.opts.pollMs);
    this.pollTimer.unref();
  }

  private async poll(): Promise<void> {
    try {
      const version = await this.store.version();
      if (version !== this.loadedVersion) await this.refresh();
      else this.syncedAt = this.now();
    } catch (err) {
      this.opts.logger?.warn('flag version check failed', { error: (err as Error).message });
    }
  }
}
