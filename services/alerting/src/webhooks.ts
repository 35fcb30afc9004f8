import { createHmac } from 'node:crypto';
import { type Job, UnrecoverableError } from 'bullmq';
import type Redis from 'ioredis';
import {
  type AlertRecord,
  alertingKeys,
  alertRecordSchema,
  formatUsd,
  queuePrefix,
  QUEUES,
  SupervisedWorker,
  TollgateError,
  type WebhookDeadLetter,
  type WebhookTargets,
} from '@tollgate/shared';
import { z } from 'zod';

export const WEBHOOK_QUEUE = QUEUES.webhooks;
export const SIGNATURE_HEADER = 'x-tollgate-signature';
export const TIMESTAMP_HEADER = 'x-tollgate-timestamp';
export const DELIVERY_HEADER = 'x-tollgate-delivery';

export const webhookJobSchema = z.object({ target: z.string(), stream_id: z.string(), alert: alertRecordSchema });
export type WebhookJob = z.infer<typeof webhookJobSchema>;

/** `v1=` + hex HMAC-SHA256 over `{timestamp}.{body}`: the timestamp is signed so a captured delivery cannot be replayed later. */
export function signature(secret: string, timestamp: string, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** Slack-compatible (`text`, `blocks`) so an incoming-webhook URL works as is; `alert` carries the record for machines. */
export function webhookPayload(alert: AlertRecord): { text: string; blocks: unknown[]; alert: AlertRecord } {
  const icon = alert.state === 'resolved' ? ':white_check_mark:' : alert.kind === 'ops' || (alert.kind === 'cost' && alert.threshold_pct >= 100) ? ':rotating_light:' : ':warning:';
  const title = alert.state === 'resolved' ? 'Resolved' : 'Firing';
  const text = `${icon} [${title}] ${alert.summary}`;
  const facts =
    alert.kind === 'cost'
      ? [
          `*Scope:* ${alert.scope} ${alert.scope_id}`,
          `*Period:* ${alert.period} ${alert.period_key}`,
          `*Threshold:* ${alert.threshold_pct}%${alert.hard ? ' (hard budget)' : ''}`,
          `*Spent:* $${formatUsd(alert.spent_micros)} of $${formatUsd(alert.limit_micros)}`,
          ...(alert.top_contributors.length
            ? [`*Top:* ${alert.top_contributors.slice(0, 5).map((c) => `${c.dimension} ${c.key} $${formatUsd(c.micros)}`).join(', ')}`]
            : []),
        ]
      : [`*Alert:* ${alert.alert}`, ...Object.entries(alert.labels).map(([k, v]) => `*${k}:* ${v}`)];
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text } },
      { type: 'section', fields: facts.map((f) => ({ type: 'mrkdwn', text: f })) },
      { type: 'context', elements: [{ type: 'mrkdwn', text: `alert ${alert.alert_id} · fingerprint ${alert.fingerprint}` }] },
    ],
    alert,
  };
}

export class WebhookDeliveryError extends TollgateError {
  constructor(message: string, readonly status?: number) {
    super('webhook_delivery_failed', message);
  }
}

export interface WebhookWorkerDeps {
  redis: Redis;
  namespace: string;
  targets: WebhookTargets;
  /** A connection with `maxRetriesPerRequest: null`, as BullMQ workers require. */
  connection: Redis;
  timeoutMs: number;
  concurrency: number;
  logger?: { warn(message: string, meta?: Record<string, unknown>): unknown };
}

/**
 * Delivers one alert to one target per job. BullMQ owns the retries (attempts with exponential
 * backoff set on the queue); after the last failed attempt the delivery is recorded as a dead
 * letter. Each attempt is bounded by a timeout and each (alert, target) is its own job, so a
 * target that never answers delays nothing but its own deliveries.
 */
export type WebhookResult = { status: number } | { skipped: string };

export function createWebhookWorker(deps: WebhookWorkerDeps): SupervisedWorker<WebhookJob, WebhookResult> {
  const deadLetters = alertingKeys(deps.namespace).webhookDeadLetters;

  async function deliver(job: Job<WebhookJob>): Promise<WebhookResult> {
    const parsed = webhookJobSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError('malformed webhook job');
    const { target: name, alert } = parsed.data;
    const target = await deps.targets.get(name);
    if (!target) return { skipped: 'target removed' };
    const body = JSON.stringify(webhookPayload(alert));
    const timestamp = String(Math.floor(Date.now() / 1000));
    let res: Response;
    try {
      res = await fetch(target.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tollgate-alerting/1',
          [TIMESTAMP_HEADER]: timestamp,
          [SIGNATURE_HEADER]: signature(target.secret, timestamp, body),
          [DELIVERY_HEADER]: job.id ?? '',
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(deps.timeoutMs),
      });
    } catch (err) {
      throw new WebhookDeliveryError(`POST to target ${name} failed: ${(err as Error).message}`);
    }
    await res.arrayBuffer().catch(() => undefined);
    if (res.ok) return { status: res.status };
    // Other 4xx say the payload or the URL is wrong: repeating the same request cannot succeed.
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
      throw new UnrecoverableError(`target ${name} refused the delivery with HTTP ${res.status}`);
    }
    throw new WebhookDeliveryError(`target ${name} answered HTTP ${res.status}`, res.status);
  }

  const worker = new SupervisedWorker<WebhookJob, WebhookResult>(
    WEBHOOK_QUEUE,
    async (job) => {
      try {
        return await deliver(job);
      } catch (err) {
        const last = err instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
        if (last) await recordDeadLetter(job, err as Error);
        throw err;
      }
    },
    { connection: deps.connection, prefix: queuePrefix(deps.namespace), concurrency: deps.concurrency, onReplaced: (info) => deps.logger?.warn('alerting: webhook worker stopped fetching and was replaced', info) },
  );

  async function recordDeadLetter(job: Job<WebhookJob>, err: Error): Promise<void> {
    const target = await deps.targets.get(job.data.target).catch(() => null);
    const record: WebhookDeadLetter = {
      delivery_id: job.id ?? '',
      target: job.data.target,
      // The origin only: for Slack and others the path of a webhook URL is its credential.
      url: target ? new URL(target.url).origin : '',
      alert_id: job.data.alert?.alert_id ?? '',
      stream_id: job.data.stream_id,
      attempts: job.attemptsMade + 1,
      error: err.message.slice(0, 500),
      failed_at: new Date().toISOString(),
    };
    // Keyed by delivery id: a retried recording (a crash in between) overwrites instead of doubling.
    await deps.redis.hset(deadLetters, record.delivery_id, JSON.stringify(record));
    deps.logger?.warn('alerting: webhook delivery dead-lettered', { ...record });
  }

  return worker;
}
