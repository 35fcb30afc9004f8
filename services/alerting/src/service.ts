import { Queue } from 'bullmq';
import type Redis from 'ioredis';
import {
  BudgetStore,
  type Config,
  createRedis,
  EventBus,
  type EventBusOptions,
  queuePrefix,
  WebhookTargets,
} from '@tollgate/shared';
import { AlertLog } from './alert-log';
import { defaultBudgets } from './budgets';
import { CostEvaluator } from './cost-alerts';
import { AlertDispatcher } from './dispatch';
import { OpsAlerts } from './ops-alerts';
import type { AlertingSettings } from './settings';
import { Sweeper } from './sweeper';
import { createWebhookWorker, WEBHOOK_QUEUE, type WebhookJob } from './webhooks';

export const SERVICE = 'alerting';

export interface AlertingLogger {
  info(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
  error(message: string, meta?: Record<string, unknown>): unknown;
}

export interface AlertingDeps {
  redis: Redis;
  /** For the connections BullMQ's worker and the stream readers block on. */
  redisUrl: string;
  namespace: string;
  budgets: Config['budgets'];
  settings: AlertingSettings;
  logger?: AlertingLogger;
  /** The clock for periods and alert times; tests move it across a rollover. */
  now?: () => number;
  /** Bus tuning (tests shorten reclaim times). */
  bus?: Partial<Omit<EventBusOptions, 'redis' | 'prefix' | 'service' | 'logger'>>;
  /** Run the sweeper on its own timer (default); tests may drive `sweeper.tick()` themselves. */
  autoSweep?: boolean;
}

export type AlertingService = Awaited<ReturnType<typeof startAlerting>>;

/**
 * One alerting instance: budget and ops evaluation from the bus (consumer group `alerting`), the
 * sweeper for what no event announces, the dispatcher from the alerts stream to the bus and the
 * webhook queue, and the webhook worker. Run as many as wanted against one Redis.
 */
export async function startAlerting(deps: AlertingDeps) {
  const { redis, namespace, settings, logger } = deps;
  const now = deps.now ?? Date.now;
  const defaults = defaultBudgets(deps.budgets);
  const log = new AlertLog(redis, namespace, { streamMaxLen: settings.streamMaxLen, retentionMs: settings.historyRetentionDays * 86_400_000 });
  const costs = new CostEvaluator({ redis, log, namespace, defaults, now, logger });
  const ops = new OpsAlerts({
    redis,
    log,
    circuitOpenSeconds: settings.circuitOpenSeconds,
    errorRateThreshold: settings.errorRateThreshold,
    errorWindowMs: settings.errorWindowMs,
    now,
  });
  const bus = new EventBus({ ...deps.bus, redis, prefix: namespace, service: SERVICE, logger });
  bus.subscribeBatch('cost.recorded', (items) => costs.onCostRecordedMany(items.map((it) => it.event)), { name: 'budget-thresholds' });
  bus.subscribe('circuit.opened', (e) => ops.onCircuit(e), { name: 'circuit-opened' });
  bus.subscribe('circuit.closed', (e) => ops.onCircuit(e), { name: 'circuit-closed' });
  bus.subscribe('error.occurred', (e) => ops.onError(e), { name: 'error-rate' });

  const targets = new WebhookTargets(redis, namespace);
  // Its own connection: ioredis copies every script BullMQ defines into each pipeline built on a
  // connection, which would tax the auto-pipelined evaluation commands on `redis`.
  const queueConnection = createRedis(deps.redisUrl, { logger, name: `${SERVICE}-webhook-queue` });
  const queue = new Queue<WebhookJob>(WEBHOOK_QUEUE, {
    connection: queueConnection,
    prefix: queuePrefix(namespace),
    defaultJobOptions: {
      attempts: settings.webhook.attempts,
      backoff: { type: 'exponential', delay: settings.webhook.backoffMs },
      // Kept a day: the job id deduplicates a notice dispatched twice for as long as the job exists.
      removeOnComplete: { age: 86_400, count: 10_000 },
      removeOnFail: { age: 7 * 86_400 },
    },
  });
  const workerConnection = createRedis(deps.redisUrl, { logger, blocking: true, name: `${SERVICE}-webhooks` });
  const worker = createWebhookWorker({
    redis,
    namespace,
    targets,
    connection: workerConnection,
    timeoutMs: settings.webhook.timeoutMs,
    concurrency: settings.webhook.concurrency,
    logger,
  });
  worker.on('error', (err) => logger?.error('alerting: webhook worker error', { error: err.message }));
  const dispatcher = new AlertDispatcher({ redis, namespace, bus, targets, queue, logger });
  const sweeper = new Sweeper({ redis, log, costs, ops, intervalMs: settings.sweepIntervalMs, now, logger });

  await new BudgetStore(redis, namespace).publishDefaults(defaults);
  // Before the first event: which scopes have a budget (the rest cost nothing to evaluate).
  await costs.start();
  await worker.waitUntilReady();
  await dispatcher.start();
  await bus.start();
  if (deps.autoSweep !== false) sweeper.start();

  return {
    bus,
    log,
    costs,
    ops,
    sweeper,
    dispatcher,
    queue,
    worker,
    /** Stops taking work first, then lets what is in flight finish. */
    async stop(): Promise<void> {
      await sweeper.stop();
      await bus.stop();
      await dispatcher.stop();
      await worker.close();
      await queue.close();
      await queueConnection.quit().catch(() => undefined);
      await workerConnection.quit().catch(() => undefined);
    },
  };
}
