import type Redis from 'ioredis';
import { type AnyEvent, eventOfEntry } from '../events/envelope';
import { field } from './fields';
import { busPartitions, checkPartitionCount } from './partitions';
import { type EventFilter, matchesFilter, matchesPattern } from './patterns';

export interface EventTailOptions {
  redis: Redis;
  prefix: string;
  /** The bus's partitions (as `EventBusOptions.partitions`); default 1. */
  partitions?: number;
  /** Type patterns, as for `EventBus.subscribe`. */
  types?: string | readonly string[];
  filter?: EventFilter;
  /** Start after this stream id (in every partition); default `$` (only new events). */
  from?: string;
  blockMs?: number;
  /** Pause after a short read so the next one collects a batch (see `EventBusOptions.lingerMs`); default 5 ms. */
  lingerMs?: number;
}

export type TailHandler = (event: AnyEvent, streamId: string, partition: number) => void | Promise<void>;

type Entries = Array<[string, string[]]>;

/**
 * Follows the bus without a consumer group: every instance sees every event, nothing is acked.
 * For live views (SSE, dashboards) and state every instance must know (breaker openings); never
 * for work that must happen once, which goes through `EventBus.subscribe`. Each partition is read
 * on a connection of its own: on a cluster one XREAD over streams in different slots fails.
 */
export class EventTail {
  private readonly readers: Redis[];
  private readonly streams: string[];
  private readonly patterns: string[];
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly lastIds: string[];

  constructor(
    private readonly opts: EventTailOptions,
    private readonly onEvent: TailHandler,
  ) {
    this.streams = busPartitions(opts.prefix, checkPartitionCount(opts.partitions ?? 1)).map((p) => p.stream);
    this.readers = this.streams.map(() => opts.redis.duplicate());
    this.patterns = opts.types === undefined ? ['*'] : typeof opts.types === 'string' ? [opts.types] : [...opts.types];
    this.lastIds = this.streams.map(() => opts.from ?? '$');
  }

  /** Resolves once the tail reads from a fixed position in every partition, so nothing published after start is missed. */
  async start(): Promise<void> {
    if (this.running) return;
    await Promise.all(
      this.streams.map(async (stream, i) => {
        if (this.lastIds[i] !== '$') return;
        const [newest] = (await this.opts.redis.xrevrange(stream, '+', '-', 'COUNT', 1)) as Entries;
        this.lastIds[i] = newest?.[0] ?? '0-0';
      }),
    );
    this.running = true;
    this.loops = this.streams.map((_, i) => this.read(i));
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const r of this.readers) r.disconnect();
    await Promise.all(this.loops);
  }

  private async read(partition: number): Promise<void> {
    const stream = this.streams[partition]!;
    const reader = this.readers[partition]!;
    while (this.running) {
      let res: Array<[string, Entries]> | null;
      try {
        res = (await reader.xread('COUNT', 200, 'BLOCK', this.opts.blockMs ?? 1_000, 'STREAMS', stream, this.lastIds[partition]!)) as typeof res;
      } catch {
        if (!this.running) return;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      let read = 0;
      for (const [, entries] of res ?? []) {
        read += entries.length;
        for (const [id, fields] of entries) {
          this.lastIds[partition] = id;
          const type = field(fields, 'type') ?? '';
          if (!this.patterns.some((p) => matchesPattern(p, type))) continue;
          let event: AnyEvent;
          try {
            event = eventOfEntry(field(fields, 'event') ?? '', field(fields, 'schema'));
          } catch {
            continue; // the consumer groups dead-letter it; a live view just skips it
          }
          if (!matchesFilter(this.opts.filter, event)) continue;
          try {
            await this.onEvent(event, id, partition);
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
