import { type Processor, Worker, type WorkerListener, type WorkerOptions } from 'bullmq';
import type Redis from 'ioredis';

export interface SupervisedWorkerOptions extends WorkerOptions {
  connection: Redis;
  /** How often the fetch is checked; default 5 s. A stall is acted on at the second check that sees it. */
  watchMs?: number;
  /** Told when a stalled Worker was replaced (for a warning in the service's log). */
  onReplaced?: (info: { queue: string; prefix: string; waiting: number; replacements: number }) => void;
}

type Listeners<D, R> = WorkerListener<D, R, string>;

/**
 * One BullMQ Worker that is replaced when it stops fetching. After a Redis Cluster master
 * restarts, a Worker can stay idle for good while its queue fills (in the cluster reliability run
 * one vision partition kept 25 jobs waiting for 2 minutes, its marker set, nothing active; BullMQ's
 * maintainers advise closing such a worker and creating a new one). A Worker counts as stalled when
 * two checks in a row find jobs ready in its queue (waiting, prioritized, or delayed and due for
 * longer than a check: a Worker promotes those itself), none started by it in between and none
 * running in it, so replacing it never abandons a job; the new one has the same options and listeners.
 * Tollgate never pauses its Workers, so a paused one counts as stalled too.
 */
export class SupervisedWorker<D, R> {
  private current: Worker<D, R>;
  private readonly make: () => Worker<D, R>;
  private readonly listeners: Array<[keyof Listeners<D, R>, (...args: never[]) => void]> = [];
  private readonly keys: { wait: string; prioritized: string; delayed: string };
  private readonly watchMs: number;
  private readonly timer: NodeJS.Timeout;
  private started = 0;
  private running = 0;
  private startedAtCheck = 0;
  private suspect = false;
  private checking = false;
  private closed = false;
  /** Workers replaced so far (for tests and metrics). */
  replacements = 0;

  constructor(
    private readonly name: string,
    processor: Processor<D, R>,
    private readonly opts: SupervisedWorkerOptions,
  ) {
    const { watchMs = 5_000, onReplaced: _, ...workerOpts } = opts;
    this.watchMs = watchMs;
    const counted: Processor<D, R> = async (...args) => {
      this.started++;
      this.running++;
      try {
        return await processor(...args);
      } finally {
        this.running--;
      }
    };
    this.make = () => new Worker<D, R>(name, counted, { autorun: true, ...workerOpts });
    this.current = this.make();
    const base = `${opts.prefix ?? 'bull'}:${name}`;
    this.keys = { wait: `${base}:wait`, prioritized: `${base}:prioritized`, delayed: `${base}:delayed` };
    this.timer = setInterval(() => void this.check(), watchMs);
    this.timer.unref();
  }

  /** The Worker fetching now. */
  get worker(): Worker<D, R> {
    return this.current;
  }

  on<E extends keyof Listeners<D, R>>(event: E, listener: Listeners<D, R>[E]): this {
    this.listeners.push([event, listener as (...args: never[]) => void]);
    this.current.on(event, listener);
    return this;
  }

  waitUntilReady(): Promise<unknown> {
    return this.current.waitUntilReady();
  }

  async close(force = false): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.current.close(force);
  }

  /** Jobs the Worker should have taken by now. BullMQ scores a delayed job by its due time x 0x1000. */
  private async ready(): Promise<number> {
    const c = this.opts.connection;
    const dueBy = (Date.now() - this.watchMs) * 0x1000;
    const [wait, prioritized, due] = await Promise.all([c.llen(this.keys.wait), c.zcard(this.keys.prioritized), c.zcount(this.keys.delayed, 0, dueBy)]);
    return wait + prioritized + due;
  }

  private async check(): Promise<void> {
    if (this.checking || this.closed) return;
    this.checking = true;
    try {
      const waiting = await this.ready();
      const stalled = waiting > 0 && this.started === this.startedAtCheck && this.running === 0;
      this.startedAtCheck = this.started;
      if (!stalled || !this.suspect) {
        this.suspect = stalled;
        return;
      }
      this.suspect = false;
      if (this.closed) return;
      const old = this.current;
      this.current = this.make();
      for (const [event, listener] of this.listeners) this.current.on(event, listener as never);
      this.replacements++;
      // Not awaited: the old Worker may be stuck in the very reconnect that stalled it. Nothing runs in it.
      void old.close(true).catch(() => undefined);
      this.opts.onReplaced?.({ queue: this.name, prefix: this.opts.prefix ?? 'bull', waiting, replacements: this.replacements });
    } catch {
      // Redis unreachable: the next check looks again.
    } finally {
      this.checking = false;
    }
  }
}
