import type Redis from 'ioredis';
import { type AnyEvent, parseEvent } from '../events/envelope';
import { keyspace } from '../keys';
import { field } from './fields';
import { type EventFilter, matchesFilter, matchesPattern } from './patterns';

export interface EventTailOptions {
  redis: Redis;
  prefix: string;
  /** Type patterns, as for `EventBus.subscribe`. */
  types?: string | readonly string[];
  filter?: EventFilter;
  /** Start after this stream id; default `$` (only new events). */
  from?: string;
  blockMs?: number;
  /** Pause after a short read so the next one collects a batch (see `EventBusOptions.lingerMs`); default 5 ms. */
  lingerMs?: number;
}

/**
 * Follows the bus without a consumer group: every instance sees every event, nothing is acked.
 * For live views (SSE, dashboards) and state every instance must know (breaker openings); never
 * for work that must happen once, which goes through `EventBus.subscribe`.
 */
export class EventTail {
  private readonly reader: Redis;
  private readonly stream: string;
  private readonly patterns: string[];
  private running = false;
  private loop?: Promise<void>;
  private lastId: string;

  constructor(
    private readonly opts: EventTailOptions,
    private readonly onEvent: (event: AnyEvent, streamId: string) => void | Promise<void>,
  ) {
    this.reader = opts.redis.duplicate();
    this.stream = keyspace(opts.prefix)('bus');
    this.patterns = opts.types === undefined ? ['*'] : typeof opts.types === 'string' ? [opts.types] : [...opts.types];
    this.lastId = opts.from ?? '$';
  }

  /** Resolves once the tail reads from a fixed position, so nothing published after start is missed. */
  async start(): Promise<void> {
    if (this.running) return;
    if (this.lastId === '$') {
      const [newest] = (await this.opts.redis.xrevrange(this.stream, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
      this.lastId = newest?.[0] ?? '0-0';
    }
    this.running = true;
    this.loop = this.read();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.reader.disconnect();
    await this.loop;
  }

  private async read(): Promise<void> {
    while (this.running) {
      let res: Array<[string, Array<[string, string[]]>]> | null;
      try {
        res = (await this.reader.xread('COUNT', 200, 'BLOCK', this.opts.blockMs ?? 1_000, 'STREAMS', this.stream, this.lastId)) as typeof res;
      } catch {
        if (!this.running) return;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      let read = 0;
      for (const [, entries] of res ?? []) {
        read += entries.length;
        for (const [id, fields] of entries) {
          this.lastId = id;
          const type = field(fields, 'type') ?? '';
          if (!this.patterns.some((p) => matchesPattern(p, type))) continue;
          let event: AnyEvent;
          try {
            event = parseEvent(JSON.parse(field(fields, 'event') ?? ''));
          } catch {
            continue; // the consumer groups dead-letter it; a live view just skips it
          }
          if (!matchesFilter(this.opts.filter, event)) continue;
          try {
            await this.onEvent(event, id);
          } catch {
            // A live view's failure must not stop the tail.
          }
        }
      }
      const linger = this.opts.lingerMs ?? 5;
      if (read > 0 && read < 200 && linger > 0) await new Promise((r) => setTimeout(r, linger));
    }
  }
}
