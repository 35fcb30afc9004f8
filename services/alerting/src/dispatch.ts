import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type Redis from 'ioredis';
import { type AlertEntry, alertingKeys, type EventBus, parseAlertEntry, type WebhookTargets } from '@tollgate/shared';
import type { WebhookJob } from './webhooks';

type StreamEntry = [id: string, fields: string[] | null];

export interface DispatcherDeps {
  redis: Redis;
  namespace: string;
  bus: EventBus;
  targets: WebhookTargets;
  queue: Queue<WebhookJob>;
  /** The consumer group; ops tools use their own groups on the same stream. */
  group?: string;
  claimIdleMs?: number;
  blockMs?: number;
  logger?: { warn(message: string, meta?: Record<string, unknown>): unknown };
}

/** BullMQ refuses ':' in job ids; stream ids and target names never contain one otherwise. */
export function deliveryId(target: string, streamId: string): string {
  return `wh-${target}-${streamId}`;
}

/**
 * Fans each notice on the alerts stream out to the bus (`cost.threshold_exceeded`) and to one
 * BullMQ job per webhook target. It reads through its own consumer group, so the instances share
 * the work and a crashed instance's notices are reclaimed. A redelivered notice is harmless: the
 * bus event id and the job id are derived from the notice, and both are deduplicated on them.
 */
export class AlertDispatcher {
  readonly group: string;
  private readonly stream: string;
  private readonly consumer = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private reader?: Redis;
  private running = false;
  private loop?: Promise<void>;
  private claimTimer?: NodeJS.Timeout;
  private claiming?: Promise<void>;

  constructor(private readonly deps: DispatcherDeps) {
    this.stream = alertingKeys(deps.namespace).alertsStream;
    this.group = deps.group ?? 'alerting';
  }

  async start(): Promise<void> {
    if (this.running) return;
    await this.ensureGroup();
    this.reader = this.deps.redis.duplicate();
    this.running = true;
    this.loop = this.readLoop();
    const idle = this.deps.claimIdleMs ?? 30_000;
    this.claimTimer = setInterval(() => {
      this.claiming ??= this.reclaim(idle)
        .catch((err) => void this.deps.logger?.warn('alerting: reclaim of alert notices failed', { error: (err as Error).message }))
        .finally(() => (this.claiming = undefined));
    }, Math.min(idle, 5_000));
    this.claimTimer.unref();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.claimTimer);
    this.reader?.disconnect();
    await this.loop;
    await this.claiming;
    this.reader = undefined;
  }

  private async ensureGroup(): Promise<void> {
    try {
      // From the beginning: notices written before the first instance created the group still go out.
      await this.deps.redis.xgroup('CREATE', this.stream, this.group, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  private async readLoop(): Promise<void> {
    while (this.running) {
      let res: Array<[string, StreamEntry[]]> | null;
      try {
        res = (await this.reader!.xreadgroup(
          'GROUP', this.group, this.consumer, 'COUNT', 50, 'BLOCK', this.deps.blockMs ?? 1_000, 'STREAMS', this.stream, '>',
        )) as Array<[string, StreamEntry[]]> | null;
      } catch (err) {
        if (!this.running) return;
        if (String((err as Error).message).includes('NOGROUP')) await this.ensureGroup().catch(() => undefined);
        else this.deps.logger?.warn('alerting: reading alert notices failed, retrying', { error: (err as Error).message });
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      for (const [, entries] of res ?? []) await this.handleAll(entries);
    }
  }

  private async reclaim(idleMs: number): Promise<void> {
    let cursor = '0-0';
    do {
      const [next, entries] = (await this.deps.redis.xautoclaim(this.stream, this.group, this.consumer, idleMs, cursor, 'COUNT', 50)) as [
        string,
        StreamEntry[],
      ];
      cursor = next;
      await this.handleAll(entries);
    } while (cursor !== '0-0' && this.running);
  }

  private async handleAll(entries: StreamEntry[]): Promise<void> {
    const done: string[] = [];
    for (const [id, fields] of entries) {
      const entry = parseAlertEntry(id, fields);
      try {
        if (entry) await this.dispatch(entry);
        done.push(id);
      } catch (err) {
        // Left pending: reclaimed and tried again after the idle time.
        this.deps.logger?.warn('alerting: dispatching an alert notice failed', { stream_id: id, error: (err as Error).message });
      }
    }
    if (done.length) await this.deps.redis.xack(this.stream, this.group, ...done);
  }

  private async dispatch({ streamId, alert }: AlertEntry): Promise<void> {
    if (alert.kind === 'cost') {
      const { kind: _k, inhibited_pct: _i, summary: _s, fired_at: _f, resolved_at: _r, resolve_reason: _rr, silenced_by: _sb, correlation_id, ...data } = alert;
      await this.deps.bus.publish('cost.threshold_exceeded', data, {
        id: `alert-${alert.alert_id}-${alert.state}`,
        correlation_id: correlation_id ?? alert.alert_id,
        ...(alert.scope === 'user' && { user_id: alert.scope_id }),
        ...(alert.scope === 'project' && { project_id: alert.scope_id }),
      });
    }
    // Silenced: kept in the history and on the stream, but nobody is paged.
    if (alert.silenced_by) return;
    const targets = await this.deps.targets.all();
    if (targets.length === 0) return;
    await this.deps.queue.addBulk(
      targets.map((t) => ({
        name: 'deliver',
        data: { target: t.name, stream_id: streamId, alert },
        opts: { jobId: deliveryId(t.name, streamId) },
      })),
    );
  }
}
