import { Queue, QueueEvents } from 'bullmq';
import {
  type ChatJob,
  type ChatJobResult,
  type CostReport,
  createLogger,
  createRedis,
  describeProviders,
  ErrorRateTracker,
  EventBus,
  hashTagged,
  AnalyticsReader,
  FunnelReader,
  LedgerReader,
  loadConfig,
  loadPriceTable,
  onShutdown,
  QUEUES,
  queuePrefix,
  type ReportJob,
  type VisionJob,
  type VisionJobResult,
} from '@tollgate/shared';
import { createApp } from './app';
import { ApiKeyStore } from './auth/api-keys';
import { ChatDispatcher } from './chat-dispatch';
import { createMetrics, followServiceHealth } from './metrics';
import { ReportDispatcher } from './report-dispatch';
import { VisionDispatcher } from './vision-dispatch';

const SERVICE = 'gateway';

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const namespace = hashTagged(config.prefix);
  // Auto-pipelining: the key lookups, rate limits and budget checks of concurrent requests share
  // one round trip. (BullMQ's connections stay without it; it is not made for them.)
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, enableAutoPipelining: true });
  const prefix = queuePrefix(namespace);
  // The queues get their own connection: ioredis copies every script BullMQ defines on a
  // connection into each pipeline built on it, a cost the request path's commands need not pay.
  const queueRedis = createRedis(config.redisUrl, { logger, name: `${SERVICE}-queues` });

  const chatQueue = new Queue<ChatJob, ChatJobResult>(QUEUES.chat, {
    connection: queueRedis,
    prefix,
    defaultJobOptions: { attempts: 1, removeOnComplete: { age: 3600, count: 10_000 }, removeOnFail: { age: 24 * 3600 } },
  });
  const chatEvents = new QueueEvents(QUEUES.chat, { connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-events` }), prefix });
  await chatEvents.waitUntilReady();
  const visionQueue = new Queue<VisionJob, VisionJobResult>(QUEUES.vision, {
    connection: queueRedis,
    prefix,
    defaultJobOptions: { attempts: 1, removeOnComplete: { age: 3600, count: 10_000 }, removeOnFail: { age: 24 * 3600 } },
  });
  const visionEvents = new QueueEvents(QUEUES.vision, { connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-vision-events` }), prefix });
  await visionEvents.waitUntilReady();
  const reportQueue = new Queue<ReportJob, CostReport>(QUEUES.reports, { connection: queueRedis, prefix });
  const reportEvents = new QueueEvents(QUEUES.reports, { connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-report-events` }), prefix });
  await reportEvents.waitUntilReady();
  // Read-only use of the bus: the ledger's dead letters for the cost API.
  const bus = new EventBus({ redis, prefix: namespace, service: SERVICE });
  const priceTable = loadPriceTable({ file: config.priceTableFile });

  const errorRates = new ErrorRateTracker();
  const metrics = createMetrics([chatQueue, visionQueue], errorRates);
  const live = followServiceHealth(redis, namespace, metrics, errorRates);
  await live.start();

  const app = createApp({
    redis,
    namespace,
    keys: new ApiKeyStore(redis, namespace),
    dispatcher: new ChatDispatcher(chatQueue, chatEvents, redis, namespace, config.requestDeadlineMs),
    metrics,
    priceTable,
    adminToken: config.adminToken,
    maxBodyBytes: config.maxBodyBytes,
    rateLimitPerMinute: config.rateLimitPerMinute,
    vision: { dispatcher: new VisionDispatcher(visionQueue, visionEvents, redis, namespace, config.requestDeadlineMs), maxImageBytes: config.visionMaxBytes },
    ops: { errorRates, queues: [chatQueue, visionQueue] },
    events: bus,
    analytics: { reader: new AnalyticsReader(redis, namespace), funnels: new FunnelReader(redis, namespace) },
    costs: {
      reader: new LedgerReader(redis, namespace),
      reports: new ReportDispatcher(reportQueue, reportEvents, redis, namespace),
      priceTable,
      deadLetters: async (count) => (await bus.deadLetters(count * 5)).filter((d) => d.group === 'cost-ledger').slice(0, count),
    },
  });
  const server = app.listen(config.gateway.port, config.gateway.host, () => {
    logger.info(`gateway listening on http://${config.gateway.host}:${config.gateway.port}`);
    logger.info(describeProviders(config));
  });
  server.on('error', (err) => {
    logger.error(`gateway cannot listen on ${config.gateway.host}:${config.gateway.port}: ${err.message}`);
    process.exit(1);
  });

  onShutdown(logger, [
    ['http', () => new Promise((resolve) => server.close(resolve))],
    ['live events', () => live.stop()],
    ['queue events', () => chatEvents.close()],
    ['queue', () => chatQueue.close()],
    ['vision queue events', () => visionEvents.close()],
    ['vision queue', () => visionQueue.close()],
    ['report queue events', () => reportEvents.close()],
    ['report queue', () => reportQueue.close()],
    ['queue redis', () => queueRedis.quit()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`gateway failed to start: ${(err as Error).message}`);
  process.exit(1);
});
