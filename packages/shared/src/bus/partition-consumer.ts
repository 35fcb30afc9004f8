import type Redis from 'ioredis';
import { field } from './fields';

export interface BusLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
  error(message: string, meta?: Record<string, unknown>): unknown;
}

export interface HandlerFailure {
  handler: string;
  reason: string;
  attempts: number;
}

/** What the bus made of an entry: ack it (null), or dead-letter its raw event with the failures. */
export type Verdict = null | { raw: string; failures: HandlerFailure[] };

export type StreamEntry = [id: string, fields: string[] | null];

export interface ConsumerSettings {
  group: string;
  consumer: string;
  startId: '0' | '$';
  blockMs: number;
  batchSize: number;
  lingerMs: number;
  claimIdleMs: number;
  maxDeliveries: number;
  /** Cap of this partition's dead-letter stream. */
  deadLetterMaxLen: number;
}

/**
 * What a partition's consumer takes from the bus it belongs to: the subscriptions that judge an
 * entry, and the instance's one budget of entries in flight, shared by every partition.
 */
export interface ConsumerHost {
  running(): boolean;
  readonly logger?: BusLogger;
  /** Resolves once the budget has room (or the bus stops). */
  freeSlot(): Promise<void>;
  /** How many entries one read may ask for now. */
  readRoom(): number;
  occupy(): void;
  release(): void;
  /** True for an entry no subscription here wants: acked undecoded, taking no slot. */
  unwanted(fields: string[]): boolean;
  judge(id: string, fields: string[], deliveries: number, screened: boolean, partition: number): Promise<Verdict>;
  /** True when a subscription takes batches: a read's wanted entries are then judged together. */
  batching(): boolean;
  /** Verdicts for first deliveries already found wanted, in their order. */
  judgeMany(entries: ReadonlyArray<readonly [string, string[]]>, partition: number): Promise<Verdict[]>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const errorText = (err: unknown) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

/**
 * One stream of the bus as this instance's consumer group member sees it: its blocking read loop
 * on a connection of its own, its entries in flight (stream ids are only unique within a stream),
 * its acks, its reclaim of entries another instance left, and its dead letters, which share its
 * slot so the MULTI that writes one also acks the entry.
 */
export class PartitionConsumer {
  private reader?: Redis;
  private loop?: Promise<void>;
  private reclaiming?: Promise<void>;
  private readonly inFlight = new Map<string, Promise<void>>();
  private acks: string[] = [];
  private ackFlush?: Promise<void>;

  constructor(
    readonly index: number,
    readonly stream: string,
    readonly deadLetterStream: string,
    private readonly redis: Redis,
    private readonly settings: ConsumerSettings,
    private readonly host: ConsumerHost,
  ) {}

  async ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', this.stream, this.settings.group, this.settings.startId, 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  /** Starts the read loop; the host is already running. */
  start(): void {
    this.reader = this.redis.duplicate();
    this.loop = this.readLoop();
  }

  /** Runs a reclaim pass unless one is still going. */
  reclaimSoon(): void {
    this.reclaiming ??= this.reclaim()
      .catch((err) => void this.host.logger?.warn('bus: reclaim failed', { stream: this.stream, error: errorText(err) }))
      .finally(() => (this.reclaiming = undefined));
  }

  /** After the host stopped running: lets the loop, reclaim and in-flight handlers finish, and acks what they completed. */
  async drain(): Promise<void> {
    await this.loop;
    await this.reclaiming;
    await Promise.allSettled(this.inFlight.values());
    await this.flushAcks();
    this.reader?.disconnect();
    this.reader = undefined;
  }

  private async readLoop(): Promise<void> {
    const { group, consumer, blockMs, lingerMs } = this.settings;
    while (this.host.running()) {
      await this.host.freeSlot();
      if (!this.host.running()) break;
      let res: Array<[string, StreamEntry[]]> | null;
      const room = this.host.readRoom();
      try {
        res = (await this.reader!.xreadgroup('GROUP', group, consumer, 'COUNT', room, 'BLOCK', blockMs, 'STREAMS', this.stream, '>')) as Array<
          [string, StreamEntry[]]
        > | null;
      } catch (err) {
        if (!this.host.running()) break;
        // A Redis restart without persistence loses the group; recreate it rather than spin.
        if (String((err as Error).message).includes('NOGROUP')) await this.ensureGroup().catch(() => undefined);
        else this.host.logger?.warn('bus: read failed, retrying', { stream: this.stream, error: errorText(err) });
        await sleep(200);
        continue;
      }
      let read = 0;
      const batching = this.host.batching();
      for (const [, entries] of res ?? []) {
        read += entries.length;
        const wanted: Array<[string, string[]]> = [];
        for (const [id, fields] of entries) {
          // Most of a service's entries are another's business: ack those here, taking no
          // in-flight slot, so they never shrink the next read.
          if (fields && field(fields, 'event') !== undefined && this.host.unwanted(fields)) this.ack(id);
          else if (batching && fields) wanted.push([id, fields]);
          else this.dispatch(id, fields, 1, true);
        }
        if (wanted.length > 0) this.dispatchMany(wanted);
      }
      // Short of what was asked for: the backlog is drained, so let more arrive before reading.
      // (Compared with the read's own COUNT: a read capped by free slots is not a short one.)
      if (read > 0 && read < room && lingerMs > 0) await sleep(lingerMs);
    }
  }

  /** `screened`: the read loop already found the entry wanted, so it is not looked up again. */
  private dispatch(id: string, fields: string[] | null, deliveries: number, screened = false): void {
    if (this.inFlight.has(id)) return; // reclaimed from ourselves while still running
    this.host.occupy();
    const work = this.handleEntry(id, fields, deliveries, screened)
      .catch((err) => void this.host.logger?.error('bus: delivery failed; the entry stays pending for reclaim', { stream: this.stream, id, error: errorText(err) }))
      .finally(() => {
        this.inFlight.delete(id);
        this.host.release();
      });
    this.inFlight.set(id, work);
  }

  /** First deliveries of one read, judged together (batch subscriptions); each still acked or dead-lettered by itself. */
  private dispatchMany(entries: Array<[string, string[]]>): void {
    const fresh = entries.filter(([id]) => !this.inFlight.has(id));
    for (let i = 0; i < fresh.length; i++) this.host.occupy();
    const work = this.host
      .judgeMany(fresh, this.index)
      .then(async (verdicts) => {
        const dead: Array<Promise<void>> = [];
        verdicts.forEach((v, i) => {
          const id = fresh[i]![0];
          if (v) dead.push(this.deadLetter(id, v.raw, v.failures));
          else this.ack(id);
        });
        await Promise.all(dead);
      })
      .catch((err) => void this.host.logger?.error('bus: delivery failed; the entries stay pending for reclaim', { stream: this.stream, count: fresh.length, error: errorText(err) }))
      .finally(() => {
        for (const [id] of fresh) {
          this.inFlight.delete(id);
          this.host.release();
        }
      });
    for (const [id] of fresh) this.inFlight.set(id, work);
  }

  private async handleEntry(id: string, fields: string[] | null, deliveries: number, screened: boolean): Promise<void> {
    if (!fields) return this.ack(id); // trimmed or deleted while pending: nothing to deliver
    const verdict = await this.host.judge(id, fields, deliveries, screened, this.index);
    if (verdict) return this.deadLetter(id, verdict.raw, verdict.failures);
    this.ack(id);
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
      await this.redis.xack(this.stream, this.settings.group, ...ids);
    } catch (err) {
      // Unacked entries are reclaimed and redelivered; handlers are idempotent by event id.
      this.host.logger?.warn('bus: ack failed; entries will be redelivered', { stream: this.stream, count: ids.length, error: errorText(err) });
    }
  }

  /** Records the failure and acks in one transaction, so the entry is neither lost nor handled again. */
  private async deadLetter(id: string, raw: string, failures: HandlerFailure[]): Promise<void> {
    const tx = this.redis.multi();
    const failedAt = new Date().toISOString();
    for (const f of failures) {
      tx.xadd(
        this.deadLetterStream, 'MAXLEN', '~', this.settings.deadLetterMaxLen, '*',
        'source_id', id, 'group', this.settings.group, 'handler', f.handler, 'reason', f.reason.slice(0, 2000),
        'attempts', f.attempts, 'failed_at', failedAt, 'event', raw,
      );
    }
    tx.xack(this.stream, this.settings.group, id);
    await tx.exec();
  }

  /** Takes over entries another consumer left unacked for too long (it crashed or hung). */
  private async reclaim(): Promise<void> {
    const { group, consumer, claimIdleMs, batchSize, maxDeliveries } = this.settings;
    let cursor = '0-0';
    do {
      const [next, entries] = (await this.redis.xautoclaim(this.stream, group, consumer, claimIdleMs, cursor, 'COUNT', batchSize)) as [
        string,
        StreamEntry[],
        string[],
      ];
      cursor = next;
      if (entries.length === 0) continue;
      const pipe = this.redis.pipeline();
      for (const [id] of entries) pipe.xpending(this.stream, group, id, id, 1);
      const counts = ((await pipe.exec()) ?? []).map(([, r]) => Number((r as Array<[string, string, number, number]>)?.[0]?.[3] ?? 1));
      for (const [i, [id, fields]] of entries.entries()) {
        const deliveries = counts[i] ?? 1;
        if (deliveries > maxDeliveries) {
          await this.deadLetter(id, (fields && field(fields, 'event')) ?? '', [
            { handler: '(delivery)', reason: `delivered ${deliveries} times without an ack (consumer crashed or hung)`, attempts: deliveries },
          ]);
          continue;
        }
        await this.host.freeSlot();
        if (!this.host.running()) return;
        this.dispatch(id, fields, deliveries);
      }
    } while (cursor !== '0-0' && this.host.running());
  }
}
