import type { AddressInfo } from 'node:net';
import {
  ApiKeyStore,
  BreakerRegistry,
  CacheSettingsStore,
  type ChatJob,
  type ChatJobResult,
  createProviderClients,
  createRedis,
  ErrorRateTracker,
  EventBus,
  FlagSnapshot,
  FlagStore,
  loadPriceTable,
  PartitionedQueue,
  partitionedQueueEvents,
  QUEUES,
  queuePartitionsFrom,
  ResponseCache,
  type VisionJob,
  type VisionJobResult,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { ConversationStore } from '@tollgate/chat-workflow/src/conversation-store';
import { createChatWorker } from '@tollgate/chat-workflow/src/worker';
import { startStub, stubEndpoints } from '@tollgate/stub-llm';
import { neverNearBudget } from '@tollgate/vision/src/routing';
import { createVisionWorker } from '@tollgate/vision/src/worker';
import { createApp } from '../src/app';
import { ChatDispatcher } from '../src/chat-dispatch';
import { createMetrics, followServiceHealth } from '../src/metrics';
import { VisionDispatcher } from '../src/vision-dispatch';
import { DEFAULT_CHAIN } from './harness';

export const FLAGS_ADMIN_TOKEN = 'admin-token-for-flag-tests-01234';

/**
 * Gateway (flags API, chat experiment, grounding kill switch), chat worker and vision worker; the
 * gateway and the vision worker each have their own flag snapshot, as separate processes do. The
 * snapshots poll only once a minute: a change that shows up sooner came over the bus.
 */
export async function startFlagSystem(label: string, opts: { queuePartitions?: number } = {}) {
  const { redis, prefix: namespace, cleanup } = testRedis(label);
  const stub = await startStub({ port: 0, quiet: true });
  const clients = createProviderClients(stubEndpoints(stub.url), 2_000);
  const snapshot = (appName: string, follow = true) => new FlagSnapshot({ redis, namespace, appName, maxAgeMs: 120_000, pollMs: 60_000, follow });
  const visionFlags = snapshot('vision');
  // As the gateway process wires it: flags.changed arrives through the metrics tail.
  const gatewayFlags = snapshot('gateway', false);
  const errorRates = new ErrorRateTracker();
  const live = followServiceHealth(redis, namespace, createMetrics([], errorRates), errorRates, (v) => gatewayFlags.notify(v));
  await live.start();
  await Promise.all([visionFlags.start(), gatewayFlags.start()]);

  const chatBus = new EventBus({ redis, prefix: namespace, service: 'chat-workflow', maxLen: 100_000 });
  const visionBus = new EventBus({ redis, prefix: namespace, service: 'vision', maxLen: 100_000 });
  const gatewayBus = new EventBus({ redis, prefix: namespace, service: 'gateway', maxLen: 100_000 });
  const breakers = new BreakerRegistry({ publish: async () => undefined, options: { volumeThreshold: 3, resetTimeout: 60_000 } });
  const connections = [0, 1, 2, 3].map(() => createRedis(TEST_REDIS_URL, { blocking: true }));
  const partitions = opts.queuePartitions ?? queuePartitionsFrom();
  const common = { redis, namespace, clients, breakers, callTimeoutMs: 2_000, maxAttempts: 2, backoff: { baseMs: 5, capMs: 20 } };

  const chatWorker = createChatWorker(
    {
      ...common,
      bus: chatBus,
      conversations: new ConversationStore(redis, namespace, { maxMessages: 50, ttlSeconds: 600 }),
      fallbackChain: DEFAULT_CHAIN,
      priceTable: loadPriceTable(),
    },
    { connection: connections[0]!, concurrency: 8, partitions },
  );
  const priceTable = loadPriceTable();
  const visionWorker = createVisionWorker(
    { ...common, bus: visionBus, cache: new ResponseCache(redis, namespace), cacheSettings: new CacheSettingsStore(redis, namespace), priceTable, nearHardBudget: neverNearBudget, flags: visionFlags },
    { connection: connections[1]!, concurrency: 4, partitions },
  );
  const chatQueue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  const chatEvents = partitionedQueueEvents(QUEUES.chat, { namespace, partitions, connection: connections[2]! });
  const visionQueue = new PartitionedQueue<VisionJob, VisionJobResult>(QUEUES.vision, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  const visionEvents = partitionedQueueEvents(QUEUES.vision, { namespace, partitions, connection: connections[3]! });
  await Promise.all([...[...chatEvents, ...visionEvents].map((e) => e.waitUntilReady()), chatWorker.waitUntilReady(), visionWorker.waitUntilReady()]);

  const keys = new ApiKeyStore(redis, namespace);
  const app = createApp({
    redis,
    namespace,
    keys,
    dispatcher: new ChatDispatcher(chatQueue, chatEvents, redis, namespace, 10_000),
    metrics: createMetrics([chatQueue, visionQueue], new ErrorRateTracker()),
    priceTable,
    adminToken: FLAGS_ADMIN_TOKEN,
    maxBodyBytes: 1024 * 1024,
    rateLimitPerMinute: 100_000,
    vision: { dispatcher: new VisionDispatcher(visionQueue, visionEvents, redis, namespace, 10_000), maxImageBytes: 1024 * 1024 },
    chatFallbackChain: DEFAULT_CHAIN,
    flags: { store: new FlagStore(redis, namespace), snapshot: gatewayFlags, bus: gatewayBus },
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    keys,
    redis,
    namespace,
    bus: gatewayBus,
    snapshots: { vision: visionFlags, gateway: gatewayFlags },
    async close() {
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await Promise.all([chatWorker.close(), visionWorker.close()]);
      await Promise.all([...[...chatEvents, ...visionEvents].map((e) => e.close()), chatQueue.close(), visionQueue.close()]);
      await Promise.all([visionFlags.stop(), gatewayFlags.stop(), live.stop()]);
      await stub.close();
      breakers.shutdown();
      await cleanup();
      await Promise.all(connections.map((c) => c.quit()));
    },
  };
}
export type FlagSystem = Awaited<ReturnType<typeof startFlagSystem>>;

export async function call(sys: { url: string }, method: string, path: string, body?: unknown, token = FLAGS_ADMIN_TOKEN) {
  const res = await fetch(`${sys.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return { status: res.status, json: (text ? JSON.parse(text) : undefined) as Record<string, any> };
}
