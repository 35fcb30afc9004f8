import type { AddressInfo } from 'node:net';
import {
  ApiKeyStore,
  type BreakerOptions,
  BreakerRegistry,
  type ChatJob,
  type ChatJobResult,
  createProviderClients,
  createRedis,
  ErrorRateTracker,
  EventBus,
  loadPriceTable,
  PartitionedQueue,
  partitionedQueueEvents,
  QUEUES,
  queuePartitionsFrom,
  type Target,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { ConversationStore } from '@tollgate/chat-workflow/src/conversation-store';
import { createChatWorker } from '@tollgate/chat-workflow/src/worker';
import { type FaultConfig, startStub, stubEndpoints } from '@tollgate/stub-llm';
import { createApp } from '../src/app';
import { ChatDispatcher } from '../src/chat-dispatch';
import { createMetrics, followServiceHealth } from '../src/metrics';

export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';
export const DEFAULT_CHAIN: Target[] = [
  { provider: 'gemini', model: 'gemini-2.0-flash' },
  { provider: 'deepseek', model: 'deepseek-chat' },
  { provider: 'openai', model: 'gpt-4o-mini' },
];

export interface SystemOptions {
  faults?: FaultConfig;
  chain?: Target[];
  breaker?: BreakerOptions;
  maxAttempts?: number;
  deadlineMs?: number;
  rateLimitPerMinute?: number;
  /** The chat queue's partitions (QUEUE_PARTITIONS); default as the services resolve it (1, 6 on a cluster). */
  queuePartitions?: number;
}

/**
 * The chat path as separate parts wired the way the services wire them: stub provider, chat
 * worker, queue, gateway app on a real port, all on real Redis under the test's own prefix.
 */
export async function startSystem(label: string, opts: SystemOptions = {}) {
  const { redis, prefix: namespace, cleanup } = testRedis(label);
  const stub = await startStub({ port: 0, quiet: true, faults: opts.faults });
  const clients = createProviderClients(
    stubEndpoints(stub.url),
    2_000,
  );
  const bus = new EventBus({ redis, prefix: namespace, service: 'chat-workflow' });
  const breakers = new BreakerRegistry({
    publish: (type, data) => bus.publish(type, data, { correlation_id: `breaker:${data.breaker}` }),
    options: { volumeThreshold: 3, resetTimeout: 60_000, ...opts.breaker },
  });
  const partitions = opts.queuePartitions ?? queuePartitionsFrom();
  const workerConnection = createRedis(TEST_REDIS_URL, { blocking: true });
  const worker = createChatWorker(
    {
      bus,
      redis,
      namespace,
      conversations: new ConversationStore(redis, namespace, { maxMessages: 50, ttlSeconds: 600 }),
      clients,
      breakers,
      fallbackChain: opts.chain ?? DEFAULT_CHAIN,
      callTimeoutMs: 2_000,
      maxAttempts: opts.maxAttempts ?? 3,
      backoff: { baseMs: 5, capMs: 20 },
    },
    { connection: workerConnection, concurrency: 8, partitions },
  );
  const queue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  const eventsConnection = createRedis(TEST_REDIS_URL, { blocking: true });
  const events = partitionedQueueEvents(QUEUES.chat, { namespace, partitions, connection: eventsConnection });
  await Promise.all(events.map((e) => e.waitUntilReady()));
  await worker.waitUntilReady();

  const errorRates = new ErrorRateTracker();
  const metrics = createMetrics([queue], errorRates);
  const live = followServiceHealth(redis, namespace, metrics, errorRates);
  await live.start();
  const keys = new ApiKeyStore(redis, namespace);
  const app = createApp({
    redis,
    namespace,
    keys,
    dispatcher: new ChatDispatcher(queue, events, redis, namespace, opts.deadlineMs ?? 10_000),
    metrics,
    priceTable: loadPriceTable(),
    adminToken: ADMIN_TOKEN,
    maxBodyBytes: 1024 * 1024,
    rateLimitPerMinute: opts.rateLimitPerMinute ?? 10_000,
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { key: apiKey } = await keys.create({ name: 'test', user_id: 'user-1', project_id: 'proj-1' });

  return {
    url,
    apiKey,
    keys,
    bus,
    stub,
    queue,
    worker,
    redis,
    namespace,
    async close() {
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await live.stop();
      await worker.close();
      await Promise.all(events.map((e) => e.close()));
      await queue.close();
      await stub.close();
      breakers.shutdown();
      await cleanup();
      await Promise.all([workerConnection.quit(), eventsConnection.quit()]);
    },
  };
}
export type System = Awaited<ReturnType<typeof startSystem>>;

export async function post(sys: { url: string }, path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${sys.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json: json as Record<string, any> };
}
