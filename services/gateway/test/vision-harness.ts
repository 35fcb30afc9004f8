import type { AddressInfo } from 'node:net';
import {
  ApiKeyStore,
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
  type VisionJob,
  type VisionJobResult,
  CacheSettingsStore,
  DEFAULT_CACHE_SETTINGS,
  ResponseCache,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { type FaultConfig, startStub, stubEndpoints } from '@tollgate/stub-llm';
import { type NearHardBudget, neverNearBudget } from '@tollgate/vision/src/routing';
import { createVisionWorker } from '@tollgate/vision/src/worker';
import { createApp } from '../src/app';
import { ChatDispatcher } from '../src/chat-dispatch';
import { createMetrics } from '../src/metrics';
import { VisionDispatcher } from '../src/vision-dispatch';

export interface VisionSystemOptions {
  faults?: FaultConfig;
  nearHardBudget?: NearHardBudget;
  maxImageBytes?: number;
  cacheTtlSeconds?: number;
  deadlineMs?: number;
  /** The vision (and chat) queues' partitions (QUEUE_PARTITIONS); default as the services resolve it (1, 6 on a cluster). */
  queuePartitions?: number;
}

/**
 * The vision path wired the way the services wire it: stub provider, vision worker, queue, and
 * the gateway app on a real port, all on real Redis under the test's own prefix. Kept apart from
 * the chat harness so the two evolve without stepping on each other.
 */
export async function startVisionSystem(label: string, opts: VisionSystemOptions = {}) {
  const { redis, prefix: namespace, cleanup } = testRedis(label);
  const stub = await startStub({ port: 0, quiet: true, faults: opts.faults });
  const clients = createProviderClients(
    stubEndpoints(stub.url),
    2_000,
  );
  const bus = new EventBus({ redis, prefix: namespace, service: 'vision' });
  const breakers = new BreakerRegistry({
    publish: (type, data) => bus.publish(type, data, { correlation_id: `breaker:${data.breaker}` }),
    options: { volumeThreshold: 3, resetTimeout: 60_000 },
  });
  const priceTable = loadPriceTable();
  const partitions = opts.queuePartitions ?? queuePartitionsFrom();
  const workerConnection = createRedis(TEST_REDIS_URL, { blocking: true });
  const worker = createVisionWorker(
    {
      bus,
      redis,
      namespace,
      clients,
      breakers,
      cache: new ResponseCache(redis, namespace),
      cacheSettings: new CacheSettingsStore(redis, namespace, { ...DEFAULT_CACHE_SETTINGS, vision_ttl_seconds: opts.cacheTtlSeconds ?? 3600 }),
      priceTable,
      nearHardBudget: opts.nearHardBudget ?? neverNearBudget,
      callTimeoutMs: 2_000,
      maxAttempts: 2,
      backoff: { baseMs: 5, capMs: 20 },
    },
    { connection: workerConnection, concurrency: 4, partitions },
  );
  const queue = new PartitionedQueue<VisionJob, VisionJobResult>(QUEUES.vision, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  const eventsConnection = createRedis(TEST_REDIS_URL, { blocking: true });
  const events = partitionedQueueEvents(QUEUES.vision, { namespace, partitions, connection: eventsConnection });
  // The app needs a chat dispatcher; nothing here sends chat work to it.
  const chatQueue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace, partitions, connection: redis });
  const chatEventsConnection = createRedis(TEST_REDIS_URL, { blocking: true });
  const chatEvents = partitionedQueueEvents(QUEUES.chat, { namespace, partitions, connection: chatEventsConnection, autorun: false });
  await Promise.all(events.map((e) => e.waitUntilReady()));
  await worker.waitUntilReady();

  const maxImageBytes = opts.maxImageBytes ?? 8 * 1024 * 1024;
  const keys = new ApiKeyStore(redis, namespace);
  const app = createApp({
    redis,
    namespace,
    keys,
    dispatcher: new ChatDispatcher(chatQueue, chatEvents, redis, namespace, 10_000),
    metrics: createMetrics([queue], new ErrorRateTracker()),
    priceTable,
    adminToken: 'admin-token-for-vision-tests-0123',
    maxBodyBytes: 1024 * 1024,
    rateLimitPerMinute: 10_000,
    vision: { dispatcher: new VisionDispatcher(queue, events, redis, namespace, opts.deadlineMs ?? 10_000), maxImageBytes },
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { key: apiKey } = await keys.create({ name: 'vision-test', user_id: 'user-v', project_id: 'proj-v', scopes: ['vision'] });

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
    priceTable,
    /** Every job the vision queue has seen, in any state. */
    async jobCount(): Promise<number> {
      const counts = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized');
      return Object.values(counts).reduce((a, b) => a + b, 0);
    },
    async close() {
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await worker.close();
      await Promise.all([...events, ...chatEvents].map((e) => e.close()));
      await queue.close();
      await chatQueue.close();
      await stub.close();
      breakers.shutdown();
      await cleanup();
      await Promise.all([workerConnection.quit(), eventsConnection.quit(), chatEventsConnection.quit()]);
    },
  };
}
export type VisionSystem = Awaited<ReturnType<typeof startVisionSystem>>;

export interface VisionRequest {
  image: Buffer;
  prompt?: string;
  quality?: 'standard' | 'high';
  filename?: string;
  /** The type the client claims; the gateway ignores it and reads the bytes. */
  declaredType?: string;
}

export interface VisionResponse {
  status: number;
  headers: Headers;
  text: string;
  json: Record<string, any>;
}

async function read(res: Response): Promise<VisionResponse> {
  const text = await res.text();
  let json: Record<string, any> = {};
  try {
    json = JSON.parse(text) as Record<string, any>;
  } catch {
    // Left empty; assertions on status and text still say what happened.
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** `POST /v1/vision` as multipart/form-data, the way a browser form or curl -F sends it. */
export async function postMultipart(sys: { url: string; apiKey: string }, req: VisionRequest, headers: Record<string, string> = {}): Promise<VisionResponse> {
  const form = new FormData();
  form.append('image', new Blob([req.image], { type: req.declaredType ?? 'image/png' }), req.filename ?? 'photo.png');
  if (req.prompt !== undefined) form.append('prompt', req.prompt);
  if (req.quality !== undefined) form.append('quality', req.quality);
  return read(await fetch(`${sys.url}/v1/vision`, { method: 'POST', headers: { authorization: `Bearer ${sys.apiKey}`, ...headers }, body: form }));
}

/** `POST /v1/vision` as JSON with the image in base64. */
export async function postJson(sys: { url: string; apiKey: string }, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<VisionResponse> {
  return read(
    await fetch(`${sys.url}/v1/vision`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sys.apiKey}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    }),
  );
}
