import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { QueueEvents } from 'bullmq';
import type Redis from 'ioredis';
import {
  BreakerRegistry,
  CacheSettingsStore,
  ResponseCache,
  type ChatJob,
  type ChatJobResult,
  createProviderClients,
  createRedis,
  ErrorRateTracker,
  EventBus,
  LivePriceTable,
  loadPriceTable,
  PartitionedQueue,
  partitionedQueueEvents,
  type PartitionedWorker,
  PriceStore,
  QUEUES,
  queuePartitionsFrom,
  type Target,
  type VisionJob,
  type VisionJobResult,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { ConversationStore } from '@tollgate/chat-workflow/src/conversation-store';
import { createChatWorker } from '@tollgate/chat-workflow/src/worker';
import { consumeUsage } from '@tollgate/cost-ledger/src/ledger-consumer';
import { LedgerWriter } from '@tollgate/cost-ledger/src/ledger-writer';
import { type FaultConfig, startStub, stubEndpoints } from '@tollgate/stub-llm';
import { neverNearBudget } from '@tollgate/vision/src/routing';
import { createVisionWorker } from '@tollgate/vision/src/worker';
import { createApp } from '../src/app';
import { ApiKeyStore } from '@tollgate/shared';
import { ChatDispatcher } from '../src/chat-dispatch';
import { createMetrics, type GatewayMetrics } from '../src/metrics';
import { VisionDispatcher } from '../src/vision-dispatch';

export const REPLICA_ADMIN = 'replicas-harness-admin-token-3e1f0a9c';
const KEYS = { openai: 'sk-test-openai', deepseek: 'sk-test-deepseek', gemini: 'test-gemini-key' };
const CHAIN: Target[] = [
  { provider: 'gemini', model: 'gemini-2.0-flash' },
  { provider: 'deepseek', model: 'deepseek-chat' },
  { provider: 'openai', model: 'gpt-4o-mini' },
];

export interface ReplicaOptions {
  gateways?: number;
  chatWorkers?: number;
  visionWorkers?: number;
  /** Ledger consumers (separate bus instances in one consumer group). */
  ledgers?: number;
  faults?: FaultConfig;
  deadlineMs?: number;
  holdMarginMs?: number;
  /** Price versions written through the API: lead time before they apply, and how often each service re-reads them. */
  priceLeadMs?: number;
  pricePollMs?: number;
  /** The chat and vision queues' partitions (QUEUE_PARTITIONS); default as the services resolve it (1, 6 on a cluster). */
  queuePartitions?: number;
}

/**
 * Several replicas of each service on one namespace, each on its own Redis connections as separate
 * processes would be: gateways (each its own app, queues and QueueEvents), chat and vision workers,
 * and ledger consumers. What a multi-replica deployment shares is only Redis.
 */
export async function startReplicas(label: string, o: ReplicaOptions = {}) {
  const { redis, prefix: namespace, cleanup } = testRedis(label);
  const closers: Array<() => Promise<unknown> | unknown> = [];
  const conn = (blocking = false): Redis => {
    const c = createRedis(TEST_REDIS_URL, { blocking });
    closers.push(() => c.quit().catch(() => undefined));
    return c;
  };
  const stub = await startStub({ port: 0, quiet: true, ...(o.faults && { faults: o.faults }) });
  const clients = createProviderClients(stubEndpoints(stub.url, KEYS), 2_000);
  const baseTable = loadPriceTable();
  // Each replica re-reads the API's price versions on its own, as separate processes do.
  const livePrices: LivePriceTable[] = [];
  const pricesFor = async (r: Redis) => {
    const live = await new LivePriceTable(new PriceStore(r, namespace, o.priceLeadMs), baseTable).start(o.pricePollMs);
    livePrices.push(live);
    return live;
  };
  const priceTable = (await pricesFor(redis)).table;
  const partitions = o.queuePartitions ?? queuePartitionsFrom();
  const workers: Array<Pick<PartitionedWorker<unknown, unknown>, 'waitUntilReady' | 'close'>> = [];
  const breakers: BreakerRegistry[] = [];
  const buses: EventBus[] = [];

  const breakerFor = (bus: EventBus) => {
    const b = new BreakerRegistry({ publish: (type, data) => bus.publish(type, data, { correlation_id: `breaker:${data.breaker}` }), options: { volumeThreshold: 1000 } });
    breakers.push(b);
    return b;
  };

  for (let i = 0; i < (o.chatWorkers ?? 2); i++) {
    const r = conn();
    const bus = new EventBus({ redis: r, prefix: namespace, service: 'chat-workflow' });
    workers.push(
      createChatWorker(
        {
          bus,
          redis: r,
          namespace,
          conversations: new ConversationStore(r, namespace, { maxMessages: 50, ttlSeconds: 600 }),
          clients,
          breakers: breakerFor(bus),
          priceTable,
          cache: new ResponseCache(r, namespace),
          cacheSettings: new CacheSettingsStore(r, namespace, undefined, 0),
          fallbackChain: CHAIN,
          callTimeoutMs: 2_000,
          maxAttempts: 2,
          backoff: { baseMs: 5, capMs: 20 },
        },
        { connection: conn(true), concurrency: 16, partitions },
      ),
    );
  }
  for (let i = 0; i < (o.visionWorkers ?? 2); i++) {
    const r = conn();
    const bus = new EventBus({ redis: r, prefix: namespace, service: 'vision' });
    workers.push(
      createVisionWorker(
        {
          bus,
          redis: r,
          namespace,
          clients,
          breakers: breakerFor(bus),
          cache: new ResponseCache(r, namespace),
          cacheSettings: new CacheSettingsStore(r, namespace, undefined, 0),
          priceTable,
          nearHardBudget: neverNearBudget,
          callTimeoutMs: 2_000,
          maxAttempts: 2,
          backoff: { baseMs: 5, capMs: 20 },
        },
        { connection: conn(true), concurrency: 8, partitions },
      ),
    );
  }
  for (let i = 0; i < (o.ledgers ?? 2); i++) {
    const bus = new EventBus({ redis: conn(), prefix: namespace, service: 'cost-ledger', blockMs: 50 });
    consumeUsage(bus, new LedgerWriter(conn(), namespace), (await pricesFor(conn())).table);
    await bus.start();
    buses.push(bus);
  }

  const gateways: Array<{ url: string; metrics: GatewayMetrics }> = [];
  const servers: Server[] = [];
  const queues: Array<{ close(): Promise<void> }> = [];
  for (let i = 0; i < (o.gateways ?? 2); i++) {
    const r = conn();
    const chatQueue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace, partitions, connection: conn(), defaultJobOptions: { attempts: 1 } });
    const chatEvents = partitionedQueueEvents(QUEUES.chat, { namespace, partitions, connection: conn(true) });
    const visionQueue = new PartitionedQueue<VisionJob, VisionJobResult>(QUEUES.vision, { namespace, partitions, connection: conn(), defaultJobOptions: { attempts: 1 } });
    const visionEvents = partitionedQueueEvents(QUEUES.vision, { namespace, partitions, connection: conn(true) });
    await Promise.all([...chatEvents, ...visionEvents].map((e: QueueEvents) => e.waitUntilReady()));
    queues.push(...chatEvents, ...visionEvents, chatQueue, visionQueue);
    const metrics = createMetrics([chatQueue, visionQueue], new ErrorRateTracker());
    const prices = await pricesFor(r);
    const deadlineMs = o.deadlineMs ?? 10_000;
    const app = createApp({
      redis: r,
      namespace,
      keys: new ApiKeyStore(r, namespace),
      dispatcher: new ChatDispatcher(chatQueue, chatEvents, r, namespace, deadlineMs),
      metrics,
      priceTable: prices.table,
      prices,
      adminToken: REPLICA_ADMIN,
      maxBodyBytes: 1024 * 1024,
      rateLimitPerMinute: 1_000_000,
      requestDeadlineMs: deadlineMs,
      ...(o.holdMarginMs !== undefined && { holdMarginMs: o.holdMarginMs }),
      chatFallbackChain: CHAIN,
      usage: { bus: new EventBus({ redis: r, prefix: namespace, service: 'gateway' }) },
      vision: { dispatcher: new VisionDispatcher(visionQueue, visionEvents, r, namespace, deadlineMs), maxImageBytes: 1024 * 1024 },
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    servers.push(server);
    gateways.push({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, metrics });
  }
  await Promise.all(workers.map((w) => w.waitUntilReady()));

  return {
    redis,
    namespace,
    stub,
    gateways,
    keys: new ApiKeyStore(redis, namespace),
    adminToken: REPLICA_ADMIN,
    async close() {
      for (const s of servers) {
        await new Promise((resolve) => s.close(resolve));
        s.closeAllConnections();
      }
      await Promise.all(workers.map((w) => w.close()));
      for (const b of buses) await b.stop();
      for (const q of queues) await q.close();
      for (const b of breakers) b.shutdown();
      for (const p of livePrices) p.stop();
      await stub.close();
      for (const c of closers) await c();
      await cleanup();
    },
  };
}
export type Replicas = Awaited<ReturnType<typeof startReplicas>>;
