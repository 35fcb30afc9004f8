import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { chatReplyKey } from '@tollgate/shared';

type Entries = Array<[id: string, fields: string[]]>;

/** One open answer: the items read for its job and not yet taken, and who waits for them. */
class Reading {
  private items: string[] = [];
  private wake?: () => void;
  closed = false;

  constructor(
    readonly jobId: string,
    private readonly onClose: (r: Reading) => void,
  ) {}

  push(item: string): void {
    this.items.push(item);
    this.wake?.();
  }

  /** The items (JSON) read since the last call, waiting up to `timeoutMs` for some; [] when none came. */
  async next(timeoutMs: number): Promise<string[]> {
    if (this.items.length === 0 && !this.closed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.items.splice(0);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    this.onClose(this);
  }
}

const BLOCK_MS = 1_000;
/** How often the reply stream is trimmed to what has been read. */
const TRIM_EVERY_MS = 1_000;

/**
 * Reads every streamed answer this gateway relays from one reply stream of its own
 * (`chatReplyKey`, named in each job's `reply_to`): workers write each item there with its job's
 * id, and one blocking XREAD of that one key hands them to the open readings. The gateway holds
 * one reading connection however many streams are open, and a read costs the same with one open
 * stream as with a thousand (it used to name every open stream's key in each read). With nothing
 * open the connection is closed; the cursor is kept, so nothing written meanwhile is missed.
 */
export class StreamReader {
  /** Goes in the job as `reply_to`. */
  readonly replyTo = randomUUID();
  private readonly key: string;
  private readonly open = new Map<string, Reading>();
  private cursor = '0-0';
  private trimmedAt = 0;
  private trimmedTo = '0-0';
  /** Set and cleared in the same tick as the decision to read or to stop, so no stream is missed. */
  private running = false;

  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {
    this.key = chatReplyKey(namespace, this.replyTo);
  }

  /** Starts reading the items of job `jobId`: call it before the job is added, so none can come first. */
  read(jobId: string): Reading {
    const reading = new Reading(jobId, (r) => this.open.get(r.jobId) === r && this.open.delete(r.jobId));
    this.open.set(jobId, reading);
    if (!this.running) {
      this.running = true;
      void this.run();
    }
    return reading;
  }

  /** Readers currently open (for tests and metrics). */
  get size(): number {
    return this.open.size;
  }

  /** Drops what has been handed out (everything before the cursor): now and then, and when going idle. */
  private trim(): void {
    if (this.trimmedTo === this.cursor) return;
    this.trimmedTo = this.cursor;
    this.trimmedAt = Date.now();
    void this.redis.xtrim(this.key, 'MINID', this.cursor).catch((err: Error) => this.onError(err));
  }

  private async run(): Promise<void> {
    const conn = this.redis.duplicate();
    try {
      for (;;) {
        if (this.open.size === 0) {
          this.running = false;
          this.trim();
          return;
        }
        let res: Array<[string, Entries]> | null;
        try {
          res = (await conn.xread('COUNT', 1000, 'BLOCK', BLOCK_MS, 'STREAMS', this.key, this.cursor)) as Array<[string, Entries]> | null;
        } catch (err) {
          this.onError(err as Error);
          await new Promise((r) => setTimeout(r, 200));
          continue;
        }
        const entries = res?.[0]?.[1];
        if (!entries || entries.length === 0) continue;
        // Fields: job, <job id>, item, <JSON>. Items of a job nobody reads (it gave up) are dropped.
        for (const [id, fields] of entries) {
          this.cursor = id;
          if (fields[0] === 'job' && fields[2] === 'item') this.open.get(fields[1]!)?.push(fields[3]!);
        }
        if (Date.now() - this.trimmedAt >= TRIM_EVERY_MS) this.trim();
      }
    } finally {
      conn.disconnect();
      // Only an unexpected throw ends the loop with streams still open: start over for them.
      if (this.running) {
        this.running = this.open.size > 0;
        if (this.running) void this.run();
      }
    }
  }
}
