import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { type EventData, type EventType, isEventType } from '../events/catalog';
import { type AnyEvent, createEvent, type EventEnvelope, type EventMeta, parseEvent } from '../events/envelope';
import { keyspace } from '../keys';
import { field } from './fields';
import { type EventFilter, matchesFilter, matchesPattern } from './patterns';
import { trimStream, type TrimResult } from './stream-trimmer';

export interface BusLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
  error(message: string, meta?: Record<string, unknown>): unknown;
}

export interface EventBusOptions {
  /** Commands go through this connection; the bus makes its own duplicate for blocking reads. */
  redis: Redis;
  /** Key namespace, e.g. `{tollgate}`; tests use their own. */
  prefix: string;
  /** Stamped as `source` on published events, and the consumer group: one group per service. */
  service: string;
  /** Unique per instance; defaults to host-pid-random. */
  consumer?: string;
  /** Retention target: about this many entries, trimmed only once every group has processed them. */
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
  streamId: string;
  /** True when the event comes from `replay`, not from live delivery. */
  replayed: boolean;
  /** How many times the stream has delivered this entry to the group (1 on first delivery). */
  deliveries: number;
  /** This handler's attempt within the delivery. */
  attempt: number;
}

export type EventHandler<E extends AnyEvent = AnyEvent> = (event: E, ctx: DeliveryContext) => unknown;
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
  event: AnyEvent;
}

export interface DeadLetter {
  streamId: string;
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
  pattern: string;
  filter?: EventFilter;
  journeysOnly: boolean;
  handler: EventHandler;
}

/** A stream entry's fields: the type and journey beside the event, readable without decoding it. */
function entryFields(e: EventEnvelope): string[] {
  const json = JSON.stringify(e);
  return e.journey_id !== undefined ? ['type', e.type, 'journey', e.journey_id, 'event', json] : ['type', e.type, 'event', json];
}

interface HandlerFailure {
  handler: string;
  reason: string;
  attempts: number;
}

type StreamEntry = [id: string, fields: string[] | null];

/**
 * Marks a handler error that retrying cannot fix (an unknown model, an invalid unit): the bus
 * dead-letters the event on the first attempt, with the error as the reason.
 */
export function permanent<E extends Error>(error: E): E & { retryable: false } {
  return Object.assign(error, { retryable: false as const });
}

const PAGE = 500;

/** The bus stream's key under a prefix: what a script that appends events itself writes to. */
export function busStreamKey(prefix: string): string {
  return keyspace(prefix)('bus');
}
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const errorText = (err: unknown) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));
const toMs = (t: Date | number | string) => (t instanceof Date ? t.getTime() : typeof t === 'number' ? t : Date.parse(t));

/**
 * The event bus on one Redis stream. Every service reads through its own consumer group, so each
 * service sees each event once, shared across that service's instances. Delivery is at least
 * once: an entry is acked only after its handlers settled, and a crashed instance's entries are
 * reclaimed by another; handlers make their effects idempotent by event id.
 */
export class EventBus {
  readonly stream: string;
  readonly deadLetterStream: string;
  readonly group: string;
  readonly consumer: string;

  private readonly redis: Redis;
  private readonly source: string;
  private readonly opts: Required<Omit<EventBusOptions, 'redis' | 'prefix' | 'service' | 'consumer' | 'logger'>>;
  private readonly logger?: BusLogger;
  private readonly subs: Subscription[] = [];
  /** Subscriptions by event type, so an entry costs one lookup rather than a match per pattern. */
  private readonly subsByType = new Map<string, Subscription[]>();
  private reader?: Redis;
  private running = false;
  private loop?: Promise<void>;
  private reclaimTimer?: NodeJS.Timeout;
  private reclaiming?: Promise<void>;
  private readonly inFlight = new Map<string, Promise<void>>();
  private slotWaiters: Array<() => void> = [];
  private acks: string[] = [];
  private publishedSinceTrim = 0;
  private trimming?: Promise<TrimResult>;
  private ackFlush?: Promise<void>;

  constructor(options: EventBusOptions) {
    const k = keyspace(options.prefix);
    this.redis = options.redis;
    this.stream = busStreamKey(options.prefix);
    this.deadLetterStream = k('bus', 'dead');
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
  }

  /** Validates and appends one event; an unknown type or bad data throws `invalid_event` and writes nothing. */
  async publish<T extends EventType>(type: T, data: EventData<T>, meta: EventMeta): Promise<EventEnvelope<T>> {
    const event = createEvent(type, data, meta, this.source);
    await this.redis.xadd(this.stream, '*', ...entryFields(event));
    this.countPublished(1);
    return event;
  }

  /** Publishes several events in one round trip; all are validated before any is written. */
  async publishMany(items: ReadonlyArray<{ [T in EventType]: { type: T; data: EventData<T>; meta: EventMeta } }[EventType]>): Promise<EventEnvelope[]> {
    const events = items.map((i) => createEvent(i.type, i.data as never, i.meta, this.source) as EventEnvelope);
    if (this.redis.options.enableAutoPipelining) {
      // Joins the connection's automatic pipeline, together with whatever else this tick sends.
      await Promise.all(events.map((e) => this.redis.xadd(this.stream, '*', ...entryFields(e))));
    } else {
      const pipe = this.redis.pipeline();
      for (const e of events) pipe.xadd(this.stream, '*', ...entryFields(e));
      const results = await pipe.exec();
      const failed = results?.find(([err]) => err);
      if (failed) throw failed[0];
    }
    this.countPublished(events.length);
    return events;
  }

  /** Trims about every tenth of maxLen publishes, so a publisher-only service keeps the stream bounded too. */
  private countPublished(n: number): void {
    this.publishedSinceTrim += n;
    if (this.publishedSinceTrim >= Math.max(100, this.opts.maxLen / 10)) {
      this.publishedSinceTrim = 0;
      void this.trim();
    }
  }

  /** Retention without loss: see stream-trimmer.ts. */
  async trim(): Promise<TrimResult> {
    this.trimming ??= trimStream(this.redis, this.stream, this.opts.maxLen, this.opts.hardMaxLen)
      .then((r) => {
        if (r.forced) this.logger?.error('bus: stream passed its hard cap; trimmed events a consumer group had not processed', { heldBy: r.heldBy });
        return r;
      })
      .catch((err) => {
        this.logger?.warn('bus: trim failed', { error: errorText(err) });
        return { trimmed: 0 };
      })
      .finally(() => (this.trimming = undefined));
    return this.trimming;
  }

  subscribe<T extends EventType>(type: T, handler: EventHandler<EventOf<T>>, options?: SubscribeOptions): () => void;
  subscribe(pattern: string, handler: EventHandler, options?: SubscribeOptions): () => void;
  subscribe(pattern: string, handler: EventHandler<never>, options: SubscribeOptions = {}): () => void {
    const sub: Subscription = {
      name: options.name ?? `${pattern}#${this.subs.length}`,
      pattern,
      filter: options.filter,
      journeysOnly: options.journeysOnly ?? false,
      handler: handler as EventHandler,
    };
    this.subs.push(sub);
    this.subsByType.clear();
    return () => {
      const i = this.subs.indexOf(sub);
      if (i >= 0) this.subs.splice(i, 1);
      this.subsByType.clear();
    };
  }

  /** Joins the service's consumer group and starts delivering to the subscriptions. */
  async start(): Promise<void> {
    if (this.running) return;
    await this.ensureGroup();
    this.reader = this.redis.duplicate();
    this.running = true;
    this.loop = this.readLoop();
    this.reclaimTimer = setInterval(() => {
      this.reclaiming ??= this.reclaim()
        .catch((err) => void this.logger?.warn('bus: reclaim failed', { error: errorText(err) }))
        .finally(() => (this.reclaiming = undefined));
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
    await this.loop;
    await this.reclaiming;
    await this.trimming;
    await Promise.allSettled(this.inFlight.values());
    await this.flushAcks();
    this.reader?.disconnect();
    this.reader = undefined;
  }

  /** Events from the stream's retained history, oldest first. */
  async history(query: HistoryQuery = {}): Promise<StoredEvent[]> {
    const patterns = query.types === undefined ? ['*'] : typeof query.types === 'string' ? [query.types] : [...query.types];
    const start = query.since === undefined ? '-' : `${toMs(query.since)}-0`;
    const end = query.until === undefined ? '+' : `${toMs(query.until)}`;
    const backwards = query.last !== undefined;
    const want = query.last ?? query.limit ?? 1_000;
    const out: StoredEvent[] = [];
    let from = backwards ? end : start;
    while (out.length < want) {
      const page = (backwards
        ? await this.redis.xrevrange(this.stream, from, start, 'COUNT', PAGE)
        : await this.redis.xrange(this.stream, from, end, 'COUNT', PAGE)) as StreamEntry[];
      for (const [streamId, fields] of page) {
        if (!fields) continue;
        const type = field(fields, 'type') ?? '';
        if (!patterns.some((p) => matchesPattern(p, type))) continue;
        const event = this.decode(fields);
        if (event && matchesFilter(query.filter, event)) out.push({ streamId, event });
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
    for (const { streamId, event } of events) {
      await handler(event, { streamId, replayed: true, deliveries: 1, attempt: 1 });
    }
    return events.length;
  }

  /** The newest dead letters, newest first. */
  async deadLetters(count = 100): Promise<DeadLetter[]> {
    const entries = (await this.redis.xrevrange(this.deadLetterStream, '+', '-', 'COUNT', count)) as StreamEntry[];
    return entries.map(([streamId, fields]) => {
      const f = fields ?? [];
      return {
        streamId,
        sourceStreamId: field(f, 'source_id') ?? '',
        group: field(f, 'group') ?? '',
        handler: field(f, 'handler') ?? '',
        reason: field(f, 'reason') ?? '',
        attempts: Number(field(f, 'attempts') ?? 0),
        failedAt: field(f, 'failed_at') ?? '',
        raw: field(f, 'event') ?? '',
      };
    });
  }

  /** Entries delivered to this service's group and not yet acked (for metrics and health). */
  async pendingCount(): Promise<number> {
    const summary = (await this.redis.xpending(this.stream, this.group)) as [number, ...unknown[]];
    return Number(summary[0] ?? 0);
  }

  private async ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', this.stream, this.group, this.opts.startId, 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  private async readLoop(): Promise<void> {
    while (this.running) {
      await this.freeSlot();
      if (!this.running) break;
      let res: Array<[string, StreamEntry[]]> | null;
      const room = Math.max(1, Math.min(this.opts.batchSize, this.opts.concurrency - this.inFlight.size));
      try {
        res = (await this.reader!.xreadgroup(
          'GROUP', this.group, this.consumer, 'COUNT', room, 'BLOCK', this.opts.blockMs, 'STREAMS', this.stream, '>',
        )) as Array<[string, StreamEntry[]]> | null;
      } catch (err) {
        if (!this.running) break;
        // A Redis restart without persistence loses the group; recreate it rather than spin.
        if (String((err as Error).message).includes('NOGROUP')) await this.ensureGroup().catch(() => undefined);
        else this.logger?.warn('bus: read failed, retrying', { error: errorText(err) });
        await sleep(200);
        continue;
      }
      let read = 0;
      for (const [, entries] of res ?? []) {
        read += entries.length;
        for (const [id, fields] of entries) {
          // Most of a service's entries are another's business: ack those here, taking no
          // in-flight slot, so they never shrink the next read.
          if (fields && field(fields, 'event') !== undefined && this.unwanted(fields)) this.ack(id);
          else this.dispatch(id, fields, 1, true);
        }
      }
      // Short of what was asked for: the backlog is drained, so let more arrive before reading.
      // (Compared with the read's own COUNT: a read capped by free slots is not a short one.)
      if (read > 0 && read < room && this.opts.lingerMs > 0) await sleep(this.opts.lingerMs);
    }
  }

  private freeSlot(): Promise<void> {
    if (this.inFlight.size < this.opts.concurrency || !this.running) return Promise.resolve();
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  /** `screened`: the read loop already found the entry wanted, so it is not looked up again. */
  private dispatch(id: string, fields: string[] | null, deliveries: number, screened = false): void {
    if (this.inFlight.has(id)) return; // reclaimed from ourselves while still running
    const work = this.handleEntry(id, fields, deliveries, screened)
      .catch((err) => void this.logger?.error('bus: delivery failed; the entry stays pending for reclaim', { id, error: errorText(err) }))
      .finally(() => {
        this.inFlight.delete(id);
        this.slotWaiters.shift()?.();
      });
    this.inFlight.set(id, work);
  }

  private async handleEntry(id: string, fields: string[] | null, deliveries: number, screened: boolean): Promise<void> {
    if (!fields) return this.ack(id); // trimmed or deleted while pending: nothing to deliver
    const raw = field(fields, 'event');
    // An entry without an event (a foreign or broken producer) is malformed, not empty: dead-letter
    // it with its fields as the evidence rather than dropping it silently.
    if (raw === undefined) {
      return this.deadLetter(id, JSON.stringify(fields), [{ handler: '(decode)', reason: 'InvalidEventError: the stream entry has no "event" field', attempts: 0 }]);
    }
    const type = field(fields, 'type');
    if (!screened && this.unwanted(fields, type)) return this.ack(id);
    let event: AnyEvent;
    try {
      event = parseEvent(JSON.parse(raw));
      if (type !== undefined && event.type !== type) throw new Error(`the entry's type field "${type}" does not match its event "${event.type}"`);
    } catch (err) {
      return this.deadLetter(id, raw, [{ handler: '(decode)', reason: errorText(err), attempts: 0 }]);
    }
    const subs = this.subscribedTo(event.type).filter((s) => (!s.journeysOnly || event.journey_id !== undefined) && matchesFilter(s.filter, event));
    const failures = (await Promise.all(subs.map((s) => this.runHandler(s, event, id, deliveries)))).filter(
      (f): f is HandlerFailure => f !== null,
    );
    if (failures.length > 0) return this.deadLetter(id, raw, failures);
    this.ack(id);
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
    if (!subs) this.subsByType.set(type, (subs = this.subs.filter((s) => matchesPattern(s.pattern, type))));
    return subs;
  }

  /** One handler, isolated: its failure never touches the other handlers of the same event. */
  private async runHandler(sub: Subscription, event: AnyEvent, streamId: string, deliveries: number): Promise<HandlerFailure | null> {
    for (let attempt = 1; ; attempt++) {
      try {
        await sub.handler(event, { streamId, replayed: false, deliveries, attempt });
        return null;
      } catch (err) {
        const permanent = (err as { retryable?: unknown } | null)?.retryable === false;
        if (permanent || attempt >= this.opts.handlerAttempts) {
          this.logger?.warn('bus: handler failed, dead-lettering', { handler: sub.name, type: event.type, id: event.id, attempts: attempt, error: errorText(err) });
          return { handler: sub.name, reason: errorText(err), attempts: attempt };
        }
        await sleep(this.opts.retryDelayMs * 2 ** (attempt - 1));
      }
    }
  }

  private ack(id: string): void {
    this.acks.push(id);
    // Acks of one tick go out as one XACK: a round trip per event would cap throughput.
    this.ackFlush ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushAcks());
  }

  private async flushAcks(): Promise<void> {
    const ids = this.acks.splice(0);
    this.ackFlush = undefined;
    if (ids.length === 0) return;
    try {
      await this.redis.xack(this.stream, this.group, ...ids);
    } catch (err) {
      // Unacked entries are reclaimed and redelivered; handlers are idempotent by event id.
      this.logger?.warn('bus: ack failed; entries will be redelivered', { count: ids.length, error: errorText(err) });
    }
  }

  /** Records the failure and acks in one transaction, so the entry is neither lost nor handled again. */
  private async deadLetter(id: string, raw: string, failures: HandlerFailure[]): Promise<void> {
    const tx = this.redis.multi();
    const failedAt = new Date().toISOString();
    for (const f of failures) {
      tx.xadd(
        this.deadLetterStream, 'MAXLEN', '~', this.opts.maxLen, '*',
        'source_id', id, 'group', this.group, 'handler', f.handler, 'reason', f.reason.slice(0, 2000),
        'attempts', f.attempts, 'failed_at', failedAt, 'event', raw,
      );
    }
    tx.xack(this.stream, this.group, id);
    await tx.exec();
  }

  /** Takes over entries another consumer left unacked for too long (it crashed or hung). */
  private async reclaim(): Promise<void> {
    let cursor = '0-0';
    do {
      const [next, entries] = (await this.redis.xautoclaim(
        this.stream, this.group, this.consumer, this.opts.claimIdleMs, cursor, 'COUNT', this.opts.batchSize,
      )) as [string, StreamEntry[], string[]];
      cursor = next;
      if (entries.length === 0) continue;
      const pipe = this.redis.pipeline();
      for (const [id] of entries) pipe.xpending(this.stream, this.group, id, id, 1);
      const counts = ((await pipe.exec()) ?? []).map(([, r]) => Number((r as Array<[string, string, number, number]>)?.[0]?.[3] ?? 1));
      for (const [i, [id, fields]] of entries.entries()) {
        const deliveries = counts[i] ?? 1;
        if (deliveries > this.opts.maxDeliveries) {
          await this.deadLetter(id, (fields && field(fields, 'event')) ?? '', [
            { handler: '(delivery)', reason: `delivered ${deliveries} times without an ack (consumer crashed or hung)`, attempts: deliveries },
          ]);
          continue;
        }
        await this.freeSlot();
        if (!this.running) return;
        this.dispatch(id, fields, deliveries);
      }
    } while (cursor !== '0-0' && this.running);
  }

  private decode(fields: string[]): AnyEvent | null {
    try {
      return parseEvent(JSON.parse(field(fields, 'event') ?? ''));
    } catch {
      return null;
    }
  }
}
