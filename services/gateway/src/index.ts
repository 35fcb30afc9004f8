import { Queue, QueueEvents } from 'bullmq';
import {
  ApiKeyStore,
  type ChatJob,
  type ChatJobResult,
  type CostReport,
  createLogger,
  createRedis,
  describeProviders,
  CacheSettingsStore,
  ErrorRateTracker,
  EventBus,
  FlagSnapshot,
  FlagStore,
  hashTagged,
  AnalyticsReader,
  FunnelReader,
  LedgerReader,
  loadConfig,
  LivePriceTable,
  loadPriceTable,
  PRICE_POLL_MS,
  PriceStore,
  onShutdown,
  PartitionedQueue,
  partitionedQueueEvents,
  QUEUES,
  sweepHolds,
  queuePrefix,
  type ReportJob,
  ResponseCache,
  type VisionJob,
  type VisionJobResult,
} from '@tollgate/shared';
import { createApp } from './app';
import { ChatDispatcher } from './chat-dispatch';
import { createMetrics, followServiceHealth } from './metrics';
import { ReportDispatcher } from './report-dispatch';
import { VisionDispatcher } from './vision-dispatch';

const SERVICE = 'gateway';
const HOLD_SWEEP_INTERVAL_MS = 2_000;
const REQUEST_JOB_OPTIONS = { attempts: 1, removeOnComplete: { age: 3600, count: 10_000 }, removeOnFail: { age: 24 * 3600 } };

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

  // The request queues are spread over QUEUE_PARTITIONS BullMQ queues each (one per cluster
  // slot), with one QueueEvents per partition to hear their jobs finish.
  const partitions = { namespace, partitions: config.queuePartitions };
  const chatQueue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { ...partitions, connection: queueRedis, defaultJobOptions: REQUEST_JOB_OPTIONS });
  const chatEvents = partitionedQueueEvents(QUEUES.chat, { ...partitions, connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-events` }) });
  const visionQueue = new PartitionedQueue<VisionJob, VisionJobResult>(QUEUES.vision, { ...partitions, connection: queueRedis, defaultJobOptions: REQUEST_JOB_OPTIONS });
  const visionEvents = partitionedQueueEvents(QUEUES.vision, { ...partitions, connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-vision-events` }) });
  await Promise.all([...chatEvents, ...visionEvents].map((e) => e.waitUntilReady()));
  const reportQueue = new Queue<ReportJob, CostReport>(QUEUES.reports, { connection: queueRedis, prefix });
  const reportEvents = new QueueEvents(QUEUES.reports, { connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-report-events` }), prefix });
  await reportEvents.waitUntilReady();
  // The ledger's dead letters for the cost API; and cache hits' zero-cost usage events.
  const bus = new EventBus({ redis, prefix: namespace, service: SERVICE, partitions: config.bus.partitions });
  const prices = await new LivePriceTable(new PriceStore(redis, namespace), loadPriceTable({ file: config.priceTableFile })).start(PRICE_POLL_MS, (err) => logger.warn('price versions could not be re-read', { error: (err as Error).message }));
  const priceTable = prices.table;

  // flags.changed reaches the snapshot through the metrics tail below: one bus tail per gateway.
  const flags = new FlagSnapshot({ redis, namespace, appName: SERVICE, logger, ...config.flags, follow: false });

  const errorRates = new ErrorRateTracker();
  const metrics = createMetrics([chatQueue, visionQueue], errorRates);
  const live = followServiceHealth(redis, namespace, metrics, errorRates, (version) => flags.notify(version), config.bus.partitions);
  await live.start();
  // After the tail: a change made between the load and the tail's start is not missed.
  await flags.start();

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
    requestDeadlineMs: config.requestDeadlineMs,
    chatFallbackChain: config.chatFallbackChain,
    defaultMaxOutputTokens: config.chatMaxOutputTokens,
    maxOutputTokensByModel: config.chatMaxOutputTokensByModel,
    vision: { dispatcher: new VisionDispatcher(visionQueue, visionEvents, redis, namespace, config.requestDeadlineMs), maxImageBytes: config.visionMaxBytes },
    ops: { errorRates, queues: [chatQueue, visionQueue], busPartitions: config.bus.partitions },
    cache: { cache: new ResponseCache(redis, namespace), settings: new CacheSettingsStore(redis, namespace, config.cache), bus },
    flags: { store: new FlagStore(redis, namespace), snapshot: flags, bus },
    events: bus,
    usage: { bus },
    prices,
    analytics: { reader: new AnalyticsReader(redis, namespace, Date.now, config.tenantShards), funnels: new FunnelReader(redis, namespace, Date.now, config.tenantShards) },
    costs: {
      reader: new LedgerReader(redis, namespace, config.tenantShards),
      reports: new ReportDispatcher(reportQueue, reportEvents, redis, namespace),
      priceTable,
      deadLetters: async (count) => (await bus.deadLetters(count * 5)).filter((d) => d.group === 'cost-ledger').slice(0, count),
    },
  });
  // Holds of requests that died are also given back when no paid request comes to sweep them.
  const sweeper = setInterval(() => {
    sweepHolds(redis, namespace)
      .then((n) => n > 0 && metrics.holdsExpired.inc(n))
      .catch((err: unknown) => logger.warn('budget hold sweep failed', { error: (err as Error).message }));
  }, HOLD_SWEEP_INTERVAL_MS);
  sweeper.unref();

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
    ['hold sweeper', async () => clearInterval(sweeper)],
    ['live events', () => live.stop()],
    ['flags', () => flags.stop()],
    ['queue events', () => Promise.all(chatEvents.map((e) => e.close()))],
    ['queue', () => chatQueue.close()],
    ['vision queue events', () => Promise.all(visionEvents.map((e) => e.close()))],
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
