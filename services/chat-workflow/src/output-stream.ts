import type Redis from 'ioredis';
import type { ChatStreamItem } from '@tollgate/shared';

/** How long a job's output stream outlives its last write (the gateway reads it as it comes). */
export const OUTPUT_TTL_SECONDS = 300;
/** A bound only: the gateway trims its reply stream to what it has read. */
const MAX_LEN = 100_000;

/**
 * A streaming job's output, written to its Redis stream with at most one write in flight. The
 * first delta goes out at once (time to first token pays no wait); deltas that arrive while a write
 * is out are joined into one entry and go together when it returns. A provider that sends its
 * answer in one burst costs two entries instead of one round trip per chunk; one whose chunks
 * come further apart than a round trip is relayed chunk by chunk, as before. Once the provider's
 * answer is complete (`hold`), what is still queued waits for the final item and goes with it:
 * the tail of the text then waits for the steps before the final item (the usage event, and the
 * history write of a conversation: about a millisecond each), and the answer costs one write less.
 */
export class OutputStream {
  private queued: ChatStreamItem[] = [];
  private draining?: Promise<void>;
  private failure?: unknown;
  private started = false;
  private holding = false;

  /** Each entry's fields before its item: the job's id on a gateway's reply stream, none on a job's own. */
  private readonly head: string[];

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    jobId?: string,
  ) {
    this.head = jobId === undefined ? [] : ['job', jobId];
  }

  /** Queues an item; throws the error of an earlier write that failed (the stream is broken). */
  push(item: ChatStreamItem): void {
    if (this.failure !== undefined) throw this.failure;
    const last = this.queued.at(-1);
    if (item.kind === 'delta' && last?.kind === 'delta') last.text += item.text;
    else this.queued.push(item.kind === 'delta' ? { ...item } : item);
    this.draining ??= this.drain();
  }

  /** The provider's answer is complete: what is queued from now on leaves with the final item. */
  hold(): void {
    this.holding = true;
  }

  /** Queues the last item and resolves once everything is in Redis. */
  async end(item: ChatStreamItem): Promise<void> {
    this.holding = false;
    this.push(item);
    await this.draining;
    if (this.failure !== undefined) throw this.failure;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queued.length > 0 && !this.holding) {
        const items = this.queued;
        this.queued = [];
        // A job's first write sets (or, on a gateway's reply stream, renews) the expiry in the same
        // transaction, so no stream outlives its readers for long.
        const tx = this.started ? this.redis.pipeline() : this.redis.multi();
        for (const item of items) tx.xadd(this.key, 'MAXLEN', '~', MAX_LEN, '*', ...this.head, 'item', JSON.stringify(item));
        if (!this.started) tx.expire(this.key, OUTPUT_TTL_SECONDS);
        const replies = await tx.exec();
        const failed = replies?.find(([err]) => err)?.[0];
        if (failed) throw failed;
        this.started = true;
      }
    } catch (err) {
      this.failure = err;
    } finally {
      this.draining = undefined;
    }
  }
}
