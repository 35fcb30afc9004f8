import { Queue } from 'bullmq';
import {
  type CostReport,
  createLogger,
  createRedis,
  EventBus,
  hashTagged,
  LedgerReader,
  loadConfig,
  LivePriceTable,
  loadPriceTable,
  PRICE_POLL_MS,
  PriceStore,
  onShutdown,
  QUEUES,
  queuePrefix,
  type ReportJob,
  startHealthServer,
} from '@tollgate/shared';
import { consumeUsage } from './ledger-consumer';
import { LedgerWriter } from './ledger-writer';
import { createReportWorker, scheduleReports } from './reports';

const SERVICE = 'cost-ledger';

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const namespace = hashTagged(config.prefix);
  // Auto-pipelining sends the scripts of concurrently handled events in one round trip.
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, enableAutoPipelining: true });
  const bus = new EventBus({
    redis,
    prefix: namespace,
    service: SERVICE,
    maxLen: config.bus.maxLen,
    maxDeliveries: config.bus.maxDeliveries,
    claimIdleMs: config.bus.claimIdleMs,
    partitions: config.bus.partitions,
    // Entries in flight, over every read: room for the next reads while a batch's script and cost
    // events are out (at 256, one read of 256 waited for its script, and the process idled).
    concurrency: 2_000,
    batchSize: 500,
    logger,
  });
  // Re-reads versions written through the price API, which take effect only after every service has them.
  const prices = await new LivePriceTable(new PriceStore(redis, namespace), loadPriceTable({ file: config.priceTableFile })).start(PRICE_POLL_MS, (err) =>
    logger.warn('price versions could not be re-read', { error: (err as Error).message }),
  );
  const table = prices.table;
  consumeUsage(bus, new LedgerWriter(redis, namespace, 500, config.tenantShards), table);
  await bus.start();

  const reader = new LedgerReader(redis, namespace, config.tenantShards);
  // BullMQ defines its scripts on the connection it is given, and ioredis copies every defined
  // script into each pipeline it builds: the queue gets its own connection so the bus's
  // auto-pipelined commands stay cheap.
  const queueRedis = createRedis(config.redisUrl, { logger, name: `${SERVICE}-report-queue` });
  const reports = new Queue<ReportJob, CostReport>(QUEUES.reports, { connection: queueRedis, prefix: queuePrefix(namespace) });
  await scheduleReports(reports);
  const reportWorker = createReportWorker({ reader, redis, bus, namespace }, createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-reports` }));
  reportWorker.on('failed', (job, err) => logger.error('report failed', { job: job?.id, error: err.message }));
  logger.info('cost-ledger ready', { consumer: bus.consumer });

  // Probes (containers set HEALTH_PORT): /healthz, /readyz (Redis answers), /metrics.
  const health = config.health && (await startHealthServer({ service: SERVICE, ...config.health, redis, logger }));

  onShutdown(logger, [
    ['health server', () => health?.close()],
    ['bus', () => bus.stop()],
    ['report worker', () => reportWorker.close()],
    ['report queue', () => reports.close()],
    ['report queue redis', () => queueRedis.quit()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`cost-ledger failed to start: ${(err as Error).message}`);
  process.exit(1);
});
