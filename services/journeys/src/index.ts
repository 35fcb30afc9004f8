import { createLogger, createRedis, EventBus, EXAMPLE_TEMPLATES, hashTagged, JourneyStore, loadConfig, onShutdown, startHealthServer } from '@tollgate/shared';
import { createAbandonWorker, scheduleAbandonment } from './abandoner';
import { consumeForJourneys } from './consumer';
import { loadJourneySettings } from './settings';
import { TemplateCache } from './state-machine';

const SERVICE = 'journeys';

async function main(): Promise<void> {
  const config = loadConfig();
  const settings = loadJourneySettings();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const namespace = hashTagged(config.prefix);
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, enableAutoPipelining: true });
  const store = new JourneyStore(redis, namespace, SERVICE);
  // The shipped examples, as version 1 when missing; published versions are never touched.
  for (const [key, input] of Object.entries(EXAMPLE_TEMPLATES)) await store.seedTemplate(key, input, 'start-up');
  const templates = new TemplateCache(store);

  const bus = new EventBus({
    redis,
    prefix: namespace,
    service: SERVICE,
    maxLen: config.bus.maxLen,
    maxDeliveries: config.bus.maxDeliveries,
    claimIdleMs: config.bus.claimIdleMs,
    partitions: config.bus.partitions,
    concurrency: 256,
    batchSize: 500,
    // Most entries carry no journey and are acked unread: after a short read, wait for more, so
    // the bus costs this service a read and an ack per 100 ms rather than per few events.
    lingerMs: 100,
    logger,
  });
  consumeForJourneys(bus, store, templates);
  await bus.start();

  // BullMQ gets connections of its own (see cost-ledger), the worker a blocking one.
  const queueRedis = createRedis(config.redisUrl, { logger, name: `${SERVICE}-queue` });
  const queue = await scheduleAbandonment(queueRedis, namespace, settings.sweepIntervalMs);
  const worker = createAbandonWorker(createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-worker` }), namespace, store, templates, (n) =>
    logger.info('abandoned idle journeys', { count: n }),
  );
  worker.on('failed', (job, err) => logger.error('abandonment sweep failed', { job: job?.id, error: err.message }));
  logger.info('journeys ready', { consumer: bus.consumer, sweep_interval_ms: settings.sweepIntervalMs });

  const health = config.health && (await startHealthServer({ service: SERVICE, ...config.health, redis, logger }));

  onShutdown(logger, [
    ['health server', () => health?.close()],
    ['bus', () => bus.stop()],
    ['abandon worker', () => worker.close()],
    ['queue', () => queue.close()],
    ['queue redis', () => queueRedis.quit()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`journeys failed to start: ${(err as Error).message}`);
  process.exit(1);
});
