import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import type Redis from 'ioredis';
import { type ChatJob, type ChatJobResult, type ChatStreamItem, type PartitionedQueue } from '@tollgate/shared';
import { ApiError } from './errors';
import { JobWaiter, JobWaitTimeoutError } from './job-waiter';
import { StreamReader } from './stream-reader';

/** What a route supplies; the dispatcher sets the deadline and whether to stream. */
export type ChatJobInput = Omit<ChatJob, 'deadline_at' | 'stream'>;

const deadlineError = () =>
  new ApiError('deadline_exceeded', 'The request did not complete within its deadline. Please try again.');

/**
 * Hands chat work to the `chat` queue (the partition its job id hashes to) and waits for its
 * outcome with a deadline. The worker does the provider call; the gateway only validates,
 * enqueues and relays.
 */
export class ChatDispatcher {
  private readonly waiter: JobWaiter<ChatJobResult>;
  private readonly streams: StreamReader;

  constructor(
    private readonly queue: PartitionedQueue<ChatJob, ChatJobResult>,
    /** Index for index with `queue.partitions`. */
    events: readonly QueueEvents[],
    redis: Redis,
    namespace: string,
    readonly deadlineMs: number,
  ) {
    this.waiter = new JobWaiter(events, (jobId) => queue.partitionOf(jobId));
    this.streams = new StreamReader(redis, namespace);
  }

  /** Streams being relayed now. */
  get openStreams(): number {
    return this.streams.size;
  }

  async run(input: ChatJobInput): Promise<ChatJobResult> {
    const deadlineAt = Date.now() + this.deadlineMs;
    try {
      // A small margin past the job's own deadline so the worker's classified answer wins the race.
      return await this.waiter.run(
        (jobId) => this.queue.add('chat', { ...input, stream: false, deadline_at: deadlineAt }, { jobId }),
        this.deadlineMs + 2_000,
      );
    } catch (err) {
      if (err instanceof JobWaitTimeoutError) throw deadlineError();
      throw err;
    }
  }

  /** Yields the worker's deltas as they are written, then the final result. */
  async *stream(input: ChatJobInput): AsyncGenerator<ChatStreamItem> {
    const deadlineAt = Date.now() + this.deadlineMs + 2_000;
    // The reading is open before the job exists, so its first items cannot come before it.
    const jobId = randomUUID();
    const reading = this.streams.read(jobId);
    // Characters of the answer relayed so far.
    let sent = 0;
    try {
      const job = await this.queue.add('chat', { ...input, stream: true, reply_to: this.streams.replyTo, deadline_at: Date.now() + this.deadlineMs }, { jobId });
      while (Date.now() < deadlineAt) {
        const items = await reading.next(Math.max(1, Math.min(1_000, deadlineAt - Date.now())));
        if (items.length === 0) {
          const state = await job.getState();
          if (state === 'failed') throw new ApiError('provider_unavailable', 'The chat could not be completed. Please try again.');
          // Done, but its items never came (a worker of an older version writes them to the job's
          // own key): the job's stored result holds the whole answer; the rest of it goes now.
          const result = state === 'completed' ? ((await this.queue.getJob(jobId))?.returnvalue as ChatJobResult | undefined) : undefined;
          if (result) {
            if (result.ok && result.reply.length > sent) yield { kind: 'delta', text: result.reply.slice(sent) };
            yield { kind: 'done', result };
            return;
          }
          continue;
        }
        for (const raw of items) {
          const item = JSON.parse(raw) as ChatStreamItem;
          if (item.kind === 'delta') sent += item.text.length;
          yield item;
          if (item.kind === 'done') return;
        }
      }
      throw deadlineError();
    } finally {
      reading.close();
    }
  }
}
