import { createLogger, createRedis, EventBus, hashTagged, loadConfig, onShutdown, startHealthServer } from '@tollgate/shared';
import { consumeForAnalytics, DEFAULT_TIMELINE_TYPES } from './consumer';
import { RollupWriter } from './rollup-writer';

const SERVICE = 'analytics';

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const namespace = hashTagged(config.prefix);
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, enableAutoPipelining: true });
  const bus = new EventBus({
    redis,
    prefix: namespace,
    service: SERVICE,
    maxLen: config.bus.maxLen,
    maxDeliveries: config.bus.maxDeliveries,
    claimIdleMs: config.bus.claimIdleMs,
    partitions: config.bus.partitions,
    // Events of one read are written as one batch, so a large read is a cheap one; concurrency
    // well above the batch keeps reads full while earlier batches are being written (a read
    // sized by the one slot just freed would be one event, then a linger).
    concurrency: 5_000,
    batchSize: 1_000,
    // Rollups need not be fresh to the millisecond: after a short read, wait for more, so a
    // lightly loaded bus costs one read and one script per 250 ms, not per event (at 500
    // requests/s, 100 ms cost 185-205 µs of this process's CPU per request, 250 ms 163-177).
    lingerMs: 250,
    logger,
  });
  const { stats } = consumeForAnalytics(bus, new RollupWriter(redis, namespace, Date.now, config.tenantShards), DEFAULT_TIMELINE_TYPES);
  await bus.start();
  logger.info('analytics ready', { consumer: bus.consumer, tenant_shards: config.tenantShards, timeline: DEFAULT_TIMELINE_TYPES });
  const report = setInterval(() => {
    if (stats.late > 0) logger.warn('events older than the minute retention were not counted', { late: stats.late });
    stats.late = 0;
  }, 60_000);
  report.unref();

  const health = config.health && (await startHealthServer({ service: SERVICE, ...config.health, redis, logger }));

  onShutdown(logger, [
    ['health server', () => health?.close()],
    ['bus', () => bus.stop()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`analytics failed to start: ${(err as Error).message}`);
  process.exit(1);
});
