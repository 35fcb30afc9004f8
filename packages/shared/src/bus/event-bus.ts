import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { type EventData, type EventType, isEventType } from '../events/catalog';
import { type AnyEvent, createEvent, type EventEnvelope, type EventMeta, eventOfEntry, schemaTag } from '../events/envelope';
import { isCluster } from '../redis';
import { field } from './fields';
import {
  type BusLogger,
  type ConsumerHost,
  type ConsumerSettings,
  errorText,
  type HandlerFailure,
  PartitionConsumer,
  type StreamEntry,
  type Verdict,
} from './partition-consumer';
import { busPartitions, checkPartitionCount, compareEntries, partitionOf, placementKey } from './partitions';
import { type EventFilter, matchesFilter, matchesPattern } from './patterns';
import { trimStream, type TrimResult } from './stream-trimmer';

export type { BusLogger } from './partition-consumer';
export { busStreamKey } from './partitions';

export interface EventBusOptions {
  /** Commands go through this connection; the bus makes its own duplicate for blocking reads. */
  redis: Redis;
  /** Key namespace, e.g. `{tollgate}`; tests use their own. */
  prefix: string;
  /** Stamped as `source` on published events, and the consumer group: one group per service. */
  service: string;
  /** Unique per instance; defaults to host-pid-random. */
  consumer?: string;
  /**
   * Streams the bus is spread over (1-256, default 1), placed so that on a Redis Cluster they
   * spread over the masters (see partitions.ts). Every instance of every service must use the
   * same number: a reader with fewer partitions than the publishers misses events.
   */
  partitions?: number;
  /**
   * Retention target: about this many entries, trimmed only once every group has processed them.
   * For the whole bus: each partition keeps its share.
   */
  maxLen?: number;
  /** Trimmed past this even if a group has not read it (a group that never reads must not fill Redis); default 10 x maxLen. */
  hardMaxLen?: number;
  /** Attempts per handler for one delivery before the event is dead-lettered for that handler. */
  handlerAttempts?: number;
  /** Delay before the second attempt; doubles each time. */
  retryDelayMs?: number;
  /** Deliveries of one entry (crash, hang, reclaim) before it is dead-lettered as poison. */
  maxDeliveries?: number;
  /** How long an entry may sit unacked with a consumer before another instance reclaims it. */
  claimIdleMs?: number;
  claimIntervalMs?: number;
  blockMs?: number;
  batchSize?: number;
  /**
   * After a read that came back short of a full batch, wait this long before reading again, so
   * the next read collects what arrived meanwhile. Every read is a round trip that wakes Redis and
   * this process; under load, reading one event at a time costs more than handling it. Default 5 ms.
   */
  lingerMs?: number;
  /** Events handled at once by this instance. */
  concurrency?: number;
  /** Where a new consumer group starts: '0' reads the retained history, '$' only new events. */
  startId?: '0' | '$';
  logger?: BusLogger;
}

export interface DeliveryContext {
  /** The entry's id in its partition's stream: with partitions, unique only together with `partition`. */
  streamId: string;
  partition: number;
  /** True when the event comes from `replay`, not from live delivery. */
  replayed: boolean;
  /** How many times the stream has delivered this entry to the group (1 on first delivery). */
  deliveries: number;
  /** This handler's attempt within the delivery. */
  attempt: number;
}

export type EventHandler<E extends AnyEvent = AnyEvent> = (event: E, ctx: DeliveryContext) => unknown;

/** One event of a batch, with its delivery. */
export interface BatchItem<E extends AnyEvent = AnyEvent> {
  event: E;
  ctx: DeliveryContext;
}
/**
 * Handles every event of one read that the subscription wants, at once. Settling acks them all;
 * throwing retries the batch, then each event alone, so one bad event is dead-lettered by itself.
 */
export type BatchHandler<E extends AnyEvent = AnyEvent> = (items: ReadonlyArray<BatchItem<E>>) => unknown;
export type EventOf<T extends EventType> = Extract<AnyEvent, { type: T }>;

export interface SubscribeOptions {
  /** Names the handler in dead letters; defaults to the pattern and its position. */
  name?: string;
  filter?: EventFilter;
  /**
   * Only events of a journey. Entries say in a field of their own whether their event has one,
   * so a service that follows journeys acks the rest of the bus undecoded.
   */
  journeysOnly?: boolean;
}

export interface HistoryQuery {
  /** The newest N matching events (returned oldest first). */
  last?: number;
  /** Type patterns, as for subscribe. */
  types?: string | readonly string[];
  since?: Date | number | string;
  until?: Date | number | string;
  filter?: EventFilter;
  /** Cap when reading forward by time; default 1,000. */
  limit?: number;
}

export interface StoredEvent {
  streamId: string;
  partition: number;
  event: AnyEvent;
}

export interface DeadLetter {
  streamId: string;
  /** Whose dead-letter stream it is in; `sourceStreamId` is an id of that partition's stream. */
  partition: number;
  sourceStreamId: string;
  group: string;
  handler: string;
  reason: string;
  attempts: number;
  failedAt: string;
  raw: string;
}

interface Subscription {
  name: string;
  patterns: readonly string[];
  filter?: EventFilter;
  journeysOnly: boolean;
  /** Per event; for a batch subscription, its batch handler with one event (replay, reclaim, isolating a failure). */
  handler: EventHandler;
  batch?: BatchHandler;
}

/** A stream entry's fields: the type and journey beside the event, readable without decoding it, and the schema that checked it (see eventOfEntry). */
function entryFields(e: EventEnvelope): string[] {
  const json = JSON.stringify(e);
  const tag = schemaTag(e.type);
  return e.journey_id !== undefined ? ['type', e.type, 'schema', tag, 'journey', e.journey_id, 'event', json] : ['type', e.type, 'schema', tag, 'event', json];
}

/**
 * Marks a handler error that retrying cannot fix (an unknown model, an invalid unit): the bus
 * dead-letters the event on the first attempt, with the error as the reason.
 */
export function permanent<E extends Error>(error: E): E & { retryable: false } {
  return Object.assign(error, { retryable: false as const });
}

const PAGE = 500;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const toMs = (t: Date | number | string) => (t instanceof Date ? t.getTime() : typeof t === 'number' ? t : Date.parse(t));

/**
 * The event bus on Redis streams: one, or `partitions` of them. Every service reads through its
 * own consumer group, so each service sees each event once, shared across that service's
 * instances. Delivery is at least once: an entry is acked only after its handlers settled, and a
 * crashed instance's entries are reclaimed by another; handlers make their effects idempotent by
 * event id. With partitions, an event goes to the partition of its correlation id (or journey, see
 * `placementKey`), so one request's events keep their order there; a group reads every partition,
 * each with its own loop.
 */
export class EventBus {
  /** The first partition's stream: with one partition, the bus. */
  readonly stream: string;
  readonly deadLetterStream: string;
  /** Each partition's stream and dead-letter stream, by partition. */
  readonly streams: readonly string[];
  readonly deadLetterStreams: readonly string[];
  readonly partitions: number;
  readonly group: string;
  readonly consumer: string;

  private readonly redis: Redis;
  private readonly source: string;
  private readonly opts: Required<Omit<EventBusOptions, 'redis' | 'prefix' | 'service' | 'consumer' | 'logger' | 'partitions'>>;
  private readonly logger?: BusLogger;
  private readonly subs: Subscription[] = [];
  /** Subscriptions by event type, so an entry costs one lookup rather than a match per pattern. */
  private readonly subsByType = new Map<string, Subscription[]>();
  private readonly consumers: PartitionConsumer[];
  private running = false;
  private reclaimTimer?: NodeJS.Timeout;
  /** Entries being handled, over every partition: the instance's one concurrency budget. */
  private inFlight = 0;
  private slotWaiters: Array<() => void> = [];
  private publishedSinceTrim = 0;
  private trimming?: Promise<TrimResult>;

  constructor(options: EventBusOptions) {
    this.partitions = checkPartitionCount(options.partitions ?? 1);
    const layout = busPartitions(options.prefix, this.partitions);
    this.redis = options.redis;
    this.streams = layout.map((p) => p.stream);
    this.deadLetterStreams = layout.map((p) => p.deadLetters);
    this.stream = this.streams[0]!;
    this.deadLetterStream = this.deadLetterStreams[0]!;
    this.group = options.service;
    this.consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.logger = options.logger;
    const claimIdleMs = options.claimIdleMs ?? 30_000;
    this.opts = {
      maxLen: options.maxLen ?? 10_000,
      hardMaxLen: options.hardMaxLen ?? (options.maxLen ?? 10_000) * 10,
      handlerAttempts: options.handlerAttempts ?? 3,
      retryDelayMs: options.retryDelayMs ?? 100,
      maxDeliveries: options.maxDeliveries ?? 5,
      claimIdleMs,
      claimIntervalMs: options.claimIntervalMs ?? Math.min(claimIdleMs, 5_000),
      blockMs: options.blockMs ?? 1_000,
      batchSize: options.batchSize ?? 100,
      lingerMs: options.lingerMs ?? 5,
      concurrency: options.concurrency ?? 64,
      startId: options.startId ?? '0',
    };
    this.source = options.service;
    const settings: ConsumerSettings = {
      group: this.group,
      consumer: this.consumer,
      startId: this.opts.startId,
      blockMs: this.opts.blockMs,
      batchSize: this.opts.batchSize,
      lingerMs: this.opts.lingerMs,
      claimIdleMs: this.opts.claimIdleMs,
      maxDeliveries: this.opts.maxDeliveries,
      deadLetterMaxLen: this.share(this.opts.maxLen),
    };
    const host: ConsumerHost = {
      running: () => this.running,
      logger: this.logger,
      freeSlot: () => this.freeSlot(),
      readRoom: () => this.readRoom(),
      occupy: () => void this.inFlight++,
      release: () => {
        this.inFlight--;
        // A loop woken alone may read nothing from its quiet partition and leave the others
        // waiting while the budget has room: with partitions, every waiter looks again.
        if (this.partitions === 1) this.slotWaiters.shift()?.();
        else for (const wake of this.slotWaiters.splice(0)) wake();
      },
      unwanted: (fields) => this.unwanted(fields),
      judge: (id, fields, deliveries, screened, partition) => this.judge(id, fields, deliveries, screened, partition),
      batching: () => this.subs.some((s) => s.batch !== undefined),
      judgeMany: (entries, partition) => this.judgeMany(entries, partition),
    };
    this.consumers = layout.map((p, i) => new PartitionConsumer(i, p.stream, p.deadLetters, this.redis, settings, host));
  }

  /** A partition's part of a whole-bus figure (retention caps). */
  private share(total: number): number {
    return Math.ceil(total / this.partitions);
  }

  private streamOf(e: EventEnvelope): string {
    return this.streams[partitionOf(placementKey(e), this.partitions)]!;
  }

  /** Validates and appends one event; an unknown type or bad data throws `invalid_event` and writes nothing. */
  async publish<T extends EventType>(type: T, data: EventData<T>, meta: EventMeta): Promise<EventEnvelope<T>> {
    const event = createEvent(type, data, meta, this.source);
    await this.redis.xadd(this.streamOf(event), '*', ...entryFields(event));
    this.countPublished(1);
    return event;
  }

  /** Publishes several events in one round trip (one per partition on a cluster); all are validated before any is written. */
  async publishMany(items: ReadonlyArray<{ [T in EventType]: { type: T; data: EventData<T>; meta: EventMeta } }[EventType]>): Promise<EventEnvelope[]> {
    const events = items.map((i) => createEvent(i.type, i.data as never, i.meta, this.source) as EventEnvelope);
    if (this.redis.options.enableAutoPipelining) {
      // Joins the connection's automatic pipeline, together with whatever else this tick sends
      // (on a cluster, ioredis splits it by node).
      await Promise.all(events.map((e) => this.redis.xadd(this.streamOf(e), '*', ...entryFields(e))));
    } else if (this.partitions === 1 || !isCluster(this.redis)) {
      await this.pipelined(events);
    } else {
      // A cluster pipeline must stay in one slot: one per partition, sent together.
      const byStream = new Map<string, EventEnvelope[]>();
      for (const e of events) {
        const stream = this.streamOf(e);
        const part = byStream.get(stream);
        if (part) part.push(e);
        else byStream.set(stream, [e]);
      }
      await Promise.all([...byStream.values()].map((part) => this.pipelined(part)));
    }
    this.countPublished(events.length);
    return events;
  }

  private async pipelined(events: readonly EventEnvelope[]): Promise<void> {
    const pipe = this.redis.pipeline();
    for (const e of events) pipe.xadd(this.streamOf(e), '*', ...entryFields(e));
    const results = await pipe.exec();
    const failed = results?.find(([err]) => err);
    if (failed) throw failed[0];
  }

  /** Trims about every tenth of maxLen publishes, so a publisher-only service keeps the stream bounded too. */
  private countPublished(n: number): void {
    this.publishedSinceTrim += n;
    if (this.publishedSinceTrim >= Math.max(100, this.opts.maxLen / 10)) {
      this.publishedSinceTrim = 0;
      void this.trim();
    }
  }

  /** Retention without loss, per partition: see stream-trimmer.ts. */
  async trim(): Promise<TrimResult> {
    this.trimming ??= Promise.all(this.streams.map((s) => this.trimOne(s)))
      .then((results) => (results.length === 1 ? results[0]! : mergeTrims(results)))
      .finally(() => (this.trimming = undefined));
    return this.trimming;
  }

  private trimOne(stream: string): Promise<TrimResult> {
    return trimStream(this.redis, stream, this.share(this.opts.maxLen), this.share(this.opts.hardMaxLen))
      .then((r) => {
        if (r.forced) this.logger?.error('bus: stream passed its hard cap; trimmed events a consumer group had not processed', { stream, heldBy: r.heldBy });
        return r;
      })
      .catch((err) => {
        this.logger?.warn('bus: trim failed', { stream, error: errorText(err) });
        return { trimmed: 0 };
      });
  }

  subscribe<T extends EventType>(type: T, handler: EventHandler<EventOf<T>>, options?: SubscribeOptions): () => void;
  subscribe(pattern: string, handler: EventHandler, options?: SubscribeOptions): () => void;
  subscribe(pattern: string, handler: EventHandler<never>, options: SubscribeOptions = {}): () => void {
    return this.add({
      name: options.name ?? `${pattern}#${this.subs.length}`,
      patterns: [pattern],
      filter: options.filter,
      journeysOnly: options.journeysOnly ?? false,
      handler: handler as EventHandler,
    });
  }

  /**
   * Like subscribe, but the handler gets every wanted event of a read in one call: one promise
   * and one write per read instead of per event, for handlers that batch their writes anyway.
   * The same delivery guarantees: an entry is acked once the batch settled; a failing batch is
   * retried, then run event by event, so only the events that fail alone are dead-lettered.
   */
  subscribeBatch<T extends EventType>(type: T, handler: BatchHandler<EventOf<T>>, options?: SubscribeOptions): () => void;
  subscribeBatch(patterns: string | readonly string[], handler: BatchHandler, options?: SubscribeOptions): () => void;
  subscribeBatch(patterns: string | readonly string[], handler: BatchHandler<never>, options: SubscribeOptions = {}): () => void {
    const list = typeof patterns === 'string' ? [patterns] : [...patterns];
    const batch = handler as BatchHandler;
    return this.add({
      name: options.name ?? `${list.join(',')}#${this.subs.length}`,
      patterns: list,
      filter: options.filter,
      journeysOnly: options.journeysOnly ?? false,
      handler: (event, ctx) => batch([{ event, ctx }]),
      batch,
    });
  }

  private add(sub: Subscription): () => void {
    this.subs.push(sub);
    this.subsByType.clear();
    return () => {
      const i = this.subs.indexOf(sub);
      if (i >= 0) this.subs.splice(i, 1);
      this.subsByType.clear();
    };
  }

  /** Joins the service's consumer group on every partition and starts delivering to the subscriptions. */
  async start(): Promise<void> {
    if (this.running) return;
    await Promise.all(this.consumers.map((c) => c.ensureGroup()));
    this.running = true;
    for (const c of this.consumers) c.start();
    this.reclaimTimer = setInterval(() => {
      for (const c of this.consumers) c.reclaimSoon();
      void this.trim();
    }, this.opts.claimIntervalMs);
    this.reclaimTimer.unref();
  }

  /** Stops reading, lets in-flight handlers finish and acks what they completed. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.reclaimTimer);
    for (const wake of this.slotWaiters.splice(0)) wake();
    await Promise.all(this.consumers.map((c) => c.drain()));
    await this.trimming;
  }

  /** Events from the retained history, oldest first; with partitions, merged in stream-id time order. */
  async history(query: HistoryQuery = {}): Promise<StoredEvent[]> {
    const want = query.last ?? query.limit ?? 1_000;
    if (this.partitions === 1) return this.historyOf(0, query, want);
    // Each partition's first (or last) `want` matches hold the bus's first (or last) `want`.
    const merged = (await Promise.all(this.streams.map((_, i) => this.historyOf(i, query, want)))).flat().sort(compareEntries);
    return query.last !== undefined ? merged.slice(Math.max(0, merged.length - want)) : merged.slice(0, want);
  }

  private async historyOf(partition: number, query: HistoryQuery, want: number): Promise<StoredEvent[]> {
    const stream = this.streams[partition]!;
    const patterns = query.types === undefined ? ['*'] : typeof query.types === 'string' ? [query.types] : [...query.types];
    const start = query.since === undefined ? '-' : `${toMs(query.since)}-0`;
    const end = query.until === undefined ? '+' : `${toMs(query.until)}`;
    const backwards = query.last !== undefined;
    const out: StoredEvent[] = [];
    let from = backwards ? end : start;
    while (out.length < want) {
      const page = (backwards
        ? await this.redis.xrevrange(stream, from, start, 'COUNT', PAGE)
        : await this.redis.xrange(stream, from, end, 'COUNT', PAGE)) as StreamEntry[];
      for (const [streamId, fields] of page) {
        if (!fields) continue;
        const type = field(fields, 'type') ?? '';
        if (!patterns.some((p) => matchesPattern(p, type))) continue;
        const event = this.decode(fields);
        if (event && matchesFilter(query.filter, event)) out.push({ streamId, partition, event });
        if (out.length >= want) break;
      }
      if (page.length < PAGE) break;
      from = `(${page[page.length - 1]![0]}`;
    }
    return backwards ? out.reverse() : out;
  }

  /** Re-delivers history to a handler, in order, marked `replayed`; returns how many were delivered. */
  async replay(query: HistoryQuery, handler: EventHandler): Promise<number> {
    const events = await this.history(query);
    for (const { streamId, partition, event } of events) {
      await handler(event, { streamId, partition, replayed: true, deliveries: 1, attempt: 1 });
    }
    return events.length;
  }

  /** The newest dead letters, newest first, over every partition. */
  async deadLetters(count = 100): Promise<DeadLetter[]> {
    const read = async (partition: number): Promise<DeadLetter[]> => {
      const entries = (await this.redis.xrevrange(this.deadLetterStreams[partition]!, '+', '-', 'COUNT', count)) as StreamEntry[];
      return entries.map(([streamId, fields]) => toDeadLetter(streamId, partition, fields ?? []));
    };
    if (this.partitions === 1) return read(0);
    const merged = (await Promise.all(this.deadLetterStreams.map((_, i) => read(i)))).flat();
    return merged.sort((a, b) => compareEntries(b, a)).slice(0, count);
  }

  /** Entries delivered to this service's group and not yet acked, over every partition (for metrics and health). */
  async pendingCount(): Promise<number> {
    const counts = await Promise.all(
      this.streams.map(async (s) => Number(((await this.redis.xpending(s, this.group)) as [number, ...unknown[]])[0] ?? 0)),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  private async freeSlot(): Promise<void> {
    // Woken waiters look again: with partitions a release wakes them all, and one may take the room.
    while (this.inFlight >= this.opts.concurrency && this.running) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  /**
   * Each read asks for at most a partition's share of the free budget: the reads of quiet
   * partitions stay blocked with their COUNT outstanding, and must not, when they return
   * together, carry the instance far past its concurrency (they stay under twice it). A busy
   * partition still fills the budget, reading again while its handlers run.
   */
  private readRoom(): number {
    return Math.max(1, Math.min(this.opts.batchSize, Math.floor((this.opts.concurrency - this.inFlight) / this.partitions)));
  }

  /**
   * An entry's event and the subscriptions it goes to; a verdict for an entry that cannot be
   * delivered (dead-lettered), or null for one nobody here wants (acked).
   */
  private decodeFor(fields: string[], screened: boolean): { raw: string; event: AnyEvent; subs: Subscription[] } | Verdict | null {
    const raw = field(fields, 'event');
    // An entry without an event (a foreign or broken producer) is malformed, not empty: dead-letter
    // it with its fields as the evidence rather than dropping it silently.
    if (raw === undefined) {
      return { raw: JSON.stringify(fields), failures: [{ handler: '(decode)', reason: 'InvalidEventError: the stream entry has no "event" field', attempts: 0 }] };
    }
    const type = field(fields, 'type');
    if (!screened && this.unwanted(fields, type)) return null;
    let event: AnyEvent;
    try {
      event = eventOfEntry(raw, field(fields, 'schema'));
      if (type !== undefined && event.type !== type) throw new Error(`the entry's type field "${type}" does not match its event "${event.type}"`);
    } catch (err) {
      return { raw, failures: [{ handler: '(decode)', reason: errorText(err), attempts: 0 }] };
    }
    return { raw, event, subs: this.subscribedTo(event.type).filter((s) => (!s.journeysOnly || event.journey_id !== undefined) && matchesFilter(s.filter, event)) };
  }

  /** What to do with an entry: null acks it, a verdict with failures dead-letters it. */
  private async judge(id: string, fields: string[], deliveries: number, screened: boolean, partition: number): Promise<Verdict> {
    const decoded = this.decodeFor(fields, screened);
    if (decoded === null || 'failures' in decoded) return decoded;
    const { raw, event, subs } = decoded;
    const failures = (await Promise.all(subs.map((s) => this.runHandler(s, event, id, partition, deliveries)))).filter(
      (f): f is HandlerFailure => f !== null,
    );
    return failures.length > 0 ? { raw, failures } : null;
  }

  /**
   * Judges the entries of one read (first deliveries, already found wanted) together: each batch
   * subscription gets its events in one call, the others one call per event as in judge.
   */
  private async judgeMany(entries: ReadonlyArray<readonly [string, string[]]>, partition: number): Promise<Verdict[]> {
    const verdicts: Verdict[] = new Array<Verdict>(entries.length).fill(null);
    const raws: string[] = new Array<string>(entries.length);
    const fail = (i: number, f: HandlerFailure | null) => {
      if (f === null) return;
      const v = verdicts[i];
      if (v) v.failures.push(f);
      else verdicts[i] = { raw: raws[i]!, failures: [f] };
    };
    const batches = new Map<Subscription, { items: BatchItem[]; at: number[] }>();
    const single: Array<Promise<void>> = [];
    entries.forEach(([id, fields], i) => {
      const decoded = this.decodeFor(fields, true);
      if (decoded === null) return;
      if ('failures' in decoded) {
        verdicts[i] = decoded;
        return;
      }
      raws[i] = decoded.raw;
      for (const s of decoded.subs) {
        if (s.batch) {
          let b = batches.get(s);
          if (!b) batches.set(s, (b = { items: [], at: [] }));
          b.items.push({ event: decoded.event, ctx: { streamId: id, partition, replayed: false, deliveries: 1, attempt: 1 } });
          b.at.push(i);
        } else single.push(this.runHandler(s, decoded.event, id, partition, 1).then((f) => fail(i, f)));
      }
    });
    const batched = [...batches].map(([s, b]) => this.runBatch(s, b.items).then((fs) => fs.forEach((f, k) => fail(b.at[k]!, f))));
    await Promise.all([...single, ...batched]);
    return verdicts;
  }

  /** A batch with its retries; if it still fails, its events one by one (each with its own retries). */
  private async runBatch(sub: Subscription, items: BatchItem[]): Promise<Array<HandlerFailure | null>> {
    if (items.length === 1) return [await this.runHandler(sub, items[0]!.event, items[0]!.ctx.streamId, items[0]!.ctx.partition, items[0]!.ctx.deliveries)];
    const failed = await this.withRetries((attempt) => sub.batch!(attempt === 1 ? items : items.map((it) => ({ event: it.event, ctx: { ...it.ctx, attempt } }))));
    if (!failed) return items.map(() => null);
    this.logger?.warn('bus: batch handler failed, running its events one by one', { handler: sub.name, events: items.length, attempts: failed.attempts, error: errorText(failed.err) });
    return Promise.all(items.map((it) => this.runHandler(sub, it.event, it.ctx.streamId, it.ctx.partition, it.ctx.deliveries)));
  }

  /**
   * A catalog type no subscription here wants is acked undecoded: decoding every event of the bus
   * costs more than handling the few a service needs. Validation stays with the consumers of that
   * type, which dead-letter it if it is bad; an unknown type is still dead-lettered here.
   */
  private unwanted(fields: string[], type = field(fields, 'type')): boolean {
    if (type === undefined || !isEventType(type)) return false;
    const wanted = this.subscribedTo(type);
    return wanted.length === 0 || (wanted.every((s) => s.journeysOnly) && field(fields, 'journey') === undefined);
  }

  private subscribedTo(type: string): Subscription[] {
    let subs = this.subsByType.get(type);
    if (!subs) this.subsByType.set(type, (subs = this.subs.filter((s) => s.patterns.some((p) => matchesPattern(p, type)))));
    return subs;
  }

  /** One handler, isolated: its failure never touches the other handlers of the same event. */
  private async runHandler(sub: Subscription, event: AnyEvent, streamId: string, partition: number, deliveries: number): Promise<HandlerFailure | null> {
    const failed = await this.withRetries((attempt) => sub.handler(event, { streamId, partition, replayed: false, deliveries, attempt }));
    if (!failed) return null;
    this.logger?.warn('bus: handler failed, dead-lettering', { handler: sub.name, type: event.type, id: event.id, attempts: failed.attempts, error: errorText(failed.err) });
    return { handler: sub.name, reason: errorText(failed.err), attempts: failed.attempts };
  }

  /** Runs `call` until it settles, up to handlerAttempts with doubling delays; a permanent error ends it at once. */
  private async withRetries(call: (attempt: number) => unknown): Promise<{ err: unknown; attempts: number } | null> {
    for (let attempt = 1; ; attempt++) {
      try {
        await call(attempt);
        return null;
      } catch (err) {
        const permanent = (err as { retryable?: unknown } | null)?.retryable === false;
        if (permanent || attempt >= this.opts.handlerAttempts) return { err, attempts: attempt };
        await sleep(this.opts.retryDelayMs * 2 ** (attempt - 1));
      }
    }
  }

  private decode(fields: string[]): AnyEvent | null {
    try {
      return eventOfEntry(field(fields, 'event') ?? '', field(fields, 'schema'));
    } catch {
      return null;
    }
  }
}

function toDeadLetter(streamId: string, partition: number, f: string[]): DeadLetter {
  return {
    streamId,
    partition,
    sourceStreamId: field(f, 'source_id') ?? '',
    group: field(f, 'group') ?? '',
    handler: field(f, 'handler') ?? '',
    reason: field(f, 'reason') ?? '',
    attempts: Number(field(f, 'attempts') ?? 0),
    failedAt: field(f, 'failed_at') ?? '',
    raw: field(f, 'event') ?? '',
  };
}

/** The partitions' trims as one: what was trimmed in all, and the first group that held one back. */
function mergeTrims(results: readonly TrimResult[]): TrimResult {
  const trimmed = results.reduce((n, r) => n + r.trimmed, 0);
  const heldBy = results.find((r) => r.heldBy)?.heldBy;
  const forced = results.some((r) => r.forced);
  return { trimmed, ...(heldBy && { heldBy }), ...(forced && { forced }) };
}
