import {
  CONVERSATION_MAX_MESSAGES,
  CacheSettingsStore,
  createLogger,
  createProviderClients,
  createRedis,
  describeProviders,
  EventBus,
  hashTagged,
  loadConfig,
  LivePriceTable,
  loadPriceTable,
  PRICE_POLL_MS,
  PriceStore,
  onShutdown,
  startHealthServer,
  startSharedBreakers,
} from '@tollgate/shared';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { SERVICE } from './chat-workflow';
import { ConversationStore } from './conversation-store';
import { createChatWorker } from './worker';

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const namespace = hashTagged(config.prefix);
  // The host name is the container's id in Docker and the pod's name in Kubernetes.
  const instance = `${SERVICE}-${hostname()}-${process.pid}-${randomUUID().slice(0, 6)}`;
  // Commands wait out a Redis outage instead of failing after ~20 retries: the usage event of a
  // call the provider already billed must reach the bus however long Redis is away.
  // Auto-pipelining: the events and writes of concurrent jobs share one round trip; on a busy
  // worker, each write to Redis costs more than the command it carries.
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, blocking: true, enableAutoPipelining: true });
  const bus = new EventBus({ redis, prefix: namespace, service: SERVICE, maxLen: config.bus.maxLen, partitions: config.bus.partitions, logger });

  const { breakers, stop: stopBreakers } = await startSharedBreakers(bus, redis, namespace, instance);

  const worker = createChatWorker(
    {
      bus,
      redis,
      namespace,
      conversations: new ConversationStore(redis, namespace, { maxMessages: CONVERSATION_MAX_MESSAGES, ttlSeconds: 24 * 3600 }),
      clients: createProviderClients(config.providers, config.providerTimeoutMs),
      breakers,
      fallbackChain: config.chatFallbackChain,
      callTimeoutMs: config.providerTimeoutMs,
      maxAttempts: config.maxProviderAttempts,
      priceTable: (
        await new LivePriceTable(new PriceStore(redis, namespace), loadPriceTable({ file: config.priceTableFile })).start(PRICE_POLL_MS, (err) =>
          logger.warn('price versions could not be re-read', { error: (err as Error).message }),
        )
      ).table,
      cacheSettings: new CacheSettingsStore(redis, namespace, config.cache),
    },
    {
      connection: createRedis(config.redisUrl, { logger, blocking: true, name: `${SERVICE}-worker` }),
      onReplaced: (info) => logger.warn('a queue partition worker stopped fetching and was replaced', info),
      concurrency: config.chatWorkerConcurrency,
      partitions: config.queuePartitions,
      name: instance,
    },
  );
  worker.on('error', (err) => logger.error('worker error', { error: err.message }));
  logger.info('chat-workflow ready', { concurrency: config.chatWorkerConcurrency, queue_partitions: config.queuePartitions, per_partition: worker.concurrency, instance });
  logger.info(describeProviders(config));

  // Probes (containers set HEALTH_PORT): /healthz, /readyz (Redis answers), /metrics.
  const health = config.health && (await startHealthServer({ service: SERVICE, ...config.health, redis, logger }));

  onShutdown(logger, [
    ['health server', () => health?.close()],
    ['worker', () => worker.close()],
    ['breakers', () => stopBreakers()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`chat-workflow failed to start: ${(err as Error).message}`);
  process.exit(1);
});
