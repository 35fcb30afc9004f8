import {
  createLogger,
  createProviderClients,
  createRedis,
  describeProviders,
  EventBus,
  FlagSnapshot,
  hashTagged,
  loadConfig,
  CacheSettingsStore,
  LivePriceTable,
  loadPriceTable,
  PRICE_POLL_MS,
  PriceStore,
  ResponseCache,
  nearHardBudget,
  onShutdown,
  startHealthServer,
  startSharedBreakers,
} from '@tollgate/shared';
import { randomUUID } from 'node:crypto';
import { SERVICE } from './vision-workflow';
import { createVisionWorker } from './worker';

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const namespace = hashTagged(config.prefix);
  const instance = `${SERVICE}-${process.pid}-${randomUUID().slice(0, 6)}`;
  // Commands wait out a Redis outage instead of failing after ~20 retries: the usage event of a
  // call the provider already billed must reach the bus however long Redis is away.
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, blocking: true });
  const bus = new EventBus({ redis, prefix: namespace, service: SERVICE, maxLen: config.bus.maxLen, partitions: config.bus.partitions, logger });

  const { breakers, stop: stopBreakers } = await startSharedBreakers(bus, redis, namespace, instance);
  // Evaluated in memory per job; kept current by flags.changed on the bus, polled as a fallback.
  const flags = new FlagSnapshot({ redis, namespace, busPartitions: config.bus.partitions, appName: SERVICE, logger, ...config.flags });
  await flags.start();

  const worker = createVisionWorker(
    {
      bus,
      redis,
      namespace,
      clients: createProviderClients(config.providers, config.providerTimeoutMs),
      breakers,
      cache: new ResponseCache(redis, namespace),
      cacheSettings: new CacheSettingsStore(redis, namespace, config.cache),
      priceTable: (
        await new LivePriceTable(new PriceStore(redis, namespace), loadPriceTable({ file: config.priceTableFile })).start(PRICE_POLL_MS, (err) =>
          logger.warn('price versions could not be re-read', { error: (err as Error).message }),
        )
      ).table,
      // The alerting service will supply the real budget check.
      // High quality steps down to standard once a hard budget of the caller is 80% used.
      nearHardBudget: async (user, project) => (await nearHardBudget(redis, namespace, user, project)) !== null,
      callTimeoutMs: config.providerTimeoutMs,
      maxAttempts: config.maxProviderAttempts,
      logger,
      flags,
    },
    { connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-worker` }), concurrency: config.visionWorkerConcurrency, partitions: config.queuePartitions, onReplaced: (info) => logger.warn('a queue partition worker stopped fetching and was replaced', info) },
  );
  worker.on('error', (err) => logger.error('worker error', { error: err.message }));
  logger.info('vision ready', {
    concurrency: config.visionWorkerConcurrency,
    queue_partitions: config.queuePartitions,
    per_partition: worker.concurrency,
    cache_ttl_seconds: config.visionCacheTtlSeconds,
    instance,
  });
  logger.info(describeProviders(config));

  // Probes (containers set HEALTH_PORT): /healthz, /readyz (Redis answers), /metrics.
  const health = config.health && (await startHealthServer({ service: SERVICE, ...config.health, redis, logger }));

  onShutdown(logger, [
    ['health server', () => health?.close()],
    ['worker', () => worker.close()],
    ['breakers', () => stopBreakers()],
    ['flags', () => flags.stop()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`vision failed to start: ${(err as Error).message}`);
  process.exit(1);
});
