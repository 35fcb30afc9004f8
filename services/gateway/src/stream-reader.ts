import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { keyspace } from '@tollgate/shared';

type Entries = Array<[id: string, fields: string[]]>;

/** One open output stream: what was read for it and not yet taken, and who waits for it. */
class Reading {
  last = '0';
  private items: string[][] = [];
  private wake?: () => void;
  closed = false;

  constructor(
    readonly key: string,
    private readonly onClose: (r: Reading) => void,
  ) {}

  push(entries: Entries): void {
    for (const [id, fields] of entries) {
      this.last = id;
      this.items.push(fields);
    }
    this.wake?.();
  }

  /** The entries read since the last call, waiting up to `timeoutMs` for some; [] when none came. */
  async next(timeoutMs: number): Promise<string[][]> {
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

/**
 * Reads every open chat output stream of this gateway with one blocking XREAD over all their keys,
 * so the gateway holds one such connection however many streams are open (it held one per
 * stream). A stream opened while the read is blocked wakes it through a small stream of this
 * gateway's own, which the read always includes. With nothing open the connection is closed.
 */
export class StreamReader {
  private readonly open = new Map<string, Reading>();
  private readonly wakeKey: string;
  private wakeLast = '$';
  /** Set and cleared in the same tick as the decision to read or to stop, so no stream is missed. */
  private running = false;
  private blocked = false;

  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {
    this.wakeKey = keyspace(namespace)('stream-wake', randomUUID());
  }

  /** Starts reading `key` from its beginning. */
  read(key: string): Reading {
    const reading = new Reading(key, (r) => this.open.get(r.key) === r && this.open.delete(r.key));
    this.open.set(key, reading);
    if (!this.running) {
      this.running = true;
      void this.run();
    }
    // Short of waking it, a blocked read would see this stream only when its block ends.
    else if (this.blocked) void this.redis.xadd(this.wakeKey, 'MAXLEN', '~', 100, '*', 'w', '1').then(() => this.redis.pexpire(this.wakeKey, 3_600_000)).catch((err: Error) => this.onError(err));
    return reading;
  }

  /** Readers currently open (for tests and metrics). */
  get size(): number {
    return this.open.size;
  }

  private async run(): Promise<void> {
    const conn = this.redis.duplicate();
    try {
      for (;;) {
        if (this.open.size === 0) {
          this.running = false;
          return;
        }
        const readings = [...this.open.values()];
        let res: Array<[string, Entries]> | null;
        try {
          this.blocked = true;
          res = (await conn.xread('COUNT', 100, 'BLOCK', BLOCK_MS, 'STREAMS', this.wakeKey, ...readings.map((r) => r.key), this.wakeLast, ...readings.map((r) => r.last))) as
            | Array<[string, Entries]>
            | null;
        } catch (err) {
          this.onError(err as Error);
          await new Promise((r) => setTimeout(r, 200));
          continue;
        } finally {
          this.blocked = false;
        }
        for (const [key, entries] of res ?? []) {
          if (key === this.wakeKey) this.wakeLast = entries.at(-1)?.[0] ?? this.wakeLast;
          else this.open.get(key)?.push(entries);
        }
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
