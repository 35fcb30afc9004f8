import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { Queue, QueueEvents } from 'bullmq';
import type Redis from 'ioredis';
import {
  ApiKeyStore,
  BreakerRegistry,
  CacheSettingsStore,
  ResponseCache,
  type ChatJob,
  type ChatJobResult,
  type CostReport,
  createLogger,
  createProviderClients,
  createRedis,
  ErrorRateTracker,
  EventBus,
  type JobCountSource,
  FlagSnapshot,
  FlagStore,
  AnalyticsReader,
  FunnelReader,
  LedgerReader,
  LivePriceTable,
  loadPriceTable,
  PartitionedQueue,
  partitionedQueueEvents,
  PriceStore,
  QUEUES,
  queuePartitionsFrom,
  queuePrefix,
  type ReportJob,
  type VisionJob,
  type VisionJobResult,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { ConversationStore } from '@tollgate/chat-workflow/src/conversation-store';
import { createChatWorker } from '@tollgate/chat-workflow/src/worker';
import { consumeUsage } from '@tollgate/cost-ledger/src/ledger-consumer';
import { LedgerWriter } from '@tollgate/cost-ledger/src/ledger-writer';
import { createReportWorker } from '@tollgate/cost-ledger/src/reports';
import { startAlerting } from '@tollgate/alerting/src/service';
import { consumeForAnalytics } from '@tollgate/analytics/src/consumer';
import { RollupWriter } from '@tollgate/analytics/src/rollup-writer';
import { DEFAULT_SETTINGS } from '@tollgate/alerting/src/settings';
import { type FaultConfig, startStub, stubEndpoints } from '@tollgate/stub-llm';
import { neverNearBudget } from '@tollgate/vision/src/routing';
import { createVisionWorker } from '@tollgate/vision/src/worker';
import { createApp } from '../src/app';
import { ChatDispatcher } from '../src/chat-dispatch';
import { createMetrics, followServiceHealth } from '../src/metrics';
import { ReportDispatcher } from '../src/report-dispatch';
import { VisionDispatcher } from '../src/vision-dispatch';

/**
 * Every part of the system in one process, wired the way the services wire themselves, on real
 * Redis under the test's own prefix: stub provider, chat and vision workers, the cost ledger
 * (usage consumer and report worker), alerting, and the gateway with every route mounted (the
 * price API and external usage included). The
 * providers are configured with fake secret-looking API keys, and every logger the parts take
 * writes to one captured buffer, so tests can check for leaks. Composes the pieces the narrower
 * harnesses use; it does not replace them.
 */

export const FULL_ADMIN_TOKEN = 'full-harness-admin-token-7f3c9a1e5b2d4c6e';
/** Shaped like the real thing, so the redactor's patterns get a fair test. */
export const FAKE_PROVIDER_KEYS = {
  openai: 'sk-proj-FakeOpenAiKey0123456789abcdefXYZ',
  deepseek: 'sk-FakeDeepseekKey9876543210fedcbaQRS',
  gemini: 'AIzaSyFakeGeminiKey_0123456789abcdefGHIJ',
} as const;

export interface FullSystemOptions {
  faults?: FaultConfig;
  rateLimitPerMinute?: number;
  maxBodyBytes?: number;
  maxImageBytes?: number;
  /** The chat and vision queues' partitions (QUEUE_PARTITIONS); default as the services resolve it (1, 6 on a cluster). */
  queuePartitions?: number;
}

/** A writable that keeps every line the loggers write. */
export function logCapture() {
  let raw = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      raw += chunk.toString();
      done();
    },
  });
  return {
    stream,
    get text() {
      return raw;
    },
    lines(): string[] {
      return raw.split('\n').filter((l) => l.trim() !== '');
    },
  };
}

export async function startFullSystem(label: string, opts: FullSystemOptions = {}) {
  const { redis, prefix: namespace, cleanup } = testRedis(label);
  const logs = logCapture();
  const logger = (service: string) => createLogger(service, { level: 'debug', stream: logs.stream, format: 'json' });
  const closers: Array<() => Promise<unknown> | unknown> = [];
  const blocking = (): Redis => {
    const c = createRedis(TEST_REDIS_URL, { blocking: true });
    closers.push(() => c.quit().catch(() => undefined));
    return c;
  };

  const stub = await startStub({ port: 0, quiet: true, faults: opts.faults });
  const clients = createProviderClients(
    stubEndpoints(stub.url, FAKE_PROVIDER_KEYS),
    2_000,
  );
  // Live, as every service has it: versions written through the price API reach them all.
  const prices = await new LivePriceTable(new PriceStore(redis, namespace), loadPriceTable()).start();
  closers.push(() => prices.stop());
  const priceTable = prices.table;
  const qPrefix = queuePrefix(namespace);
  const partitions = opts.queuePartitions ?? queuePartitionsFrom();

  // chat-workflow
  const chatBus = new EventBus({ redis, prefix: namespace, service: 'chat-workflow', logger: logger('chat-workflow') });
  const chatBreakers = new BreakerRegistry({
    publish: (type, data) => chatBus.publish(type, data, { correlation_id: `breaker:${data.breaker}` }),
    options: { volumeThreshold: 3, resetTimeout: 60_000 },
  });
  const chatWorker = createChatWorker(
    {
      priceTable,
      cacheSettings: new CacheSettingsStore(redis, namespace, undefined, 0),
      bus: chatBus,
      redis,
      namespace,
      conversations: new ConversationStore(redis, namespace, { maxMessages: 50, ttlSeconds: 600 }),
      clients,
      breakers: chatBreakers,
      fallbackChain: [
        { provider: 'gemini', model: 'gemini-2.0-flash' },
        { provider: 'deepseek', model: 'deepseek-chat' },
        { provider: 'openai', model: 'gpt-4o-mini' },
      ],
      callTimeoutMs: 2_000,
      maxAttempts: 2,
      backoff: { baseMs: 5, capMs: 20 },
    },
    { connection: blocking(), concurrency: 8, partitions },
  );

  // vision
  const visionBus = new EventBus({ redis, prefix: namespace, service: 'vision', logger: logger('vision') });
  const visionBreakers = new BreakerRegistry({
    publish: (type, data) => visionBus.publish(type, data, { correlation_id: `breaker:${data.breaker}` }),
    options: { volumeThreshold: 3, resetTimeout: 60_000 },
  });
  const visionWorker = createVisionWorker(
    {
      bus: visionBus,
      redis,
      namespace,
      clients,
      breakers: visionBreakers,
      cache: new ResponseCache(redis, namespace),
      cacheSettings: new CacheSettingsStore(redis, namespace, undefined, 0),
      priceTable,
      nearHardBudget: neverNearBudget,
      callTimeoutMs: 2_000,
      maxAttempts: 2,
      backoff: { baseMs: 5, capMs: 20 },
      logger: logger('vision'),
    },
    { connection: blocking(), concurrency: 4, partitions },
  );

  // cost-ledger
  const ledgerBus = new EventBus({ redis, prefix: namespace, service: 'cost-ledger', blockMs: 50, logger: logger('cost-ledger') });
  consumeUsage(ledgerBus, new LedgerWriter(redis, namespace), priceTable);
  await ledgerBus.start();
  const reader = new LedgerReader(redis, namespace);
  const reportWorker = createReportWorker({ reader, redis, bus: ledgerBus, namespace }, blocking());

  // analytics
  const analyticsBus = new EventBus({ redis, prefix: namespace, service: 'analytics', blockMs: 50, logger: logger('analytics') });
  const analytics = consumeForAnalytics(analyticsBus, new RollupWriter(redis, namespace));
  await analyticsBus.start();

  // alerting (its own connection, as a separate process would have)
  const alertingRedis = createRedis(TEST_REDIS_URL, { name: 'test-full-alerting' });
  const alerting = await startAlerting({
    redis: alertingRedis,
    redisUrl: TEST_REDIS_URL,
    namespace,
    budgets: { dailyMicros: 0, weeklyMicros: 0, monthlyMicros: 0, thresholdsPercent: [50, 80, 100] },
    settings: { ...DEFAULT_SETTINGS, sweepIntervalMs: 100, webhook: { attempts: 1, backoffMs: 10, timeoutMs: 1_000, concurrency: 2 } },
    logger: logger('alerting'),
    bus: { claimIdleMs: 2_000, blockMs: 100 },
  });

  // gateway
  const chatQueue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  const chatEvents = partitionedQueueEvents(QUEUES.chat, { namespace, partitions, connection: blocking() });
  const visionQueue = new PartitionedQueue<VisionJob, VisionJobResult>(QUEUES.vision, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  const visionEvents = partitionedQueueEvents(QUEUES.vision, { namespace, partitions, connection: blocking() });
  const reportQueue = new Queue<ReportJob, CostReport>(QUEUES.reports, { connection: redis, prefix: qPrefix });
  const reportEvents = new QueueEvents(QUEUES.reports, { connection: blocking(), prefix: qPrefix });
  await Promise.all([
    ...[...chatEvents, ...visionEvents].map((e) => e.waitUntilReady()),
    reportEvents.waitUntilReady(),
    chatWorker.waitUntilReady(),
    visionWorker.waitUntilReady(),
    reportWorker.waitUntilReady(),
  ]);
  // The gateway process's bus: the ledger's dead letters, refusals, cache hits' and reported usage events.
  const gatewayBus = new EventBus({ redis, prefix: namespace, service: 'gateway' });
  const errorRates = new ErrorRateTracker();
  const metrics = createMetrics([chatQueue, visionQueue], errorRates);
  const live = followServiceHealth(redis, namespace, metrics, errorRates);
  await live.start();
  const keys = new ApiKeyStore(redis, namespace);
  const flags = new FlagSnapshot({ redis, namespace, appName: 'gateway', maxAgeMs: 120_000, pollMs: 60_000 });
  await flags.start();
  closers.push(() => flags.stop());
  const app = createApp({
    redis,
    namespace,
    keys,
    dispatcher: new ChatDispatcher(chatQueue, chatEvents, redis, namespace, 10_000),
    metrics,
    priceTable,
    adminToken: FULL_ADMIN_TOKEN,
    maxBodyBytes: opts.maxBodyBytes ?? 1024 * 1024,
    rateLimitPerMinute: opts.rateLimitPerMinute ?? 1_000_000,
    vision: { dispatcher: new VisionDispatcher(visionQueue, visionEvents, redis, namespace, 10_000), maxImageBytes: opts.maxImageBytes ?? 8 * 1024 * 1024 },
    ops: { errorRates, queues: [chatQueue, visionQueue] },
    cache: { cache: new ResponseCache(redis, namespace), settings: new CacheSettingsStore(redis, namespace, undefined, 0), bus: gatewayBus },
    flags: { store: new FlagStore(redis, namespace), snapshot: flags, bus: gatewayBus },
    events: gatewayBus,
    usage: { bus: gatewayBus },
    prices,
    analytics: { reader: new AnalyticsReader(redis, namespace), funnels: new FunnelReader(redis, namespace) },
    costs: {
      reader,
      reports: new ReportDispatcher(reportQueue, reportEvents, redis, namespace),
      priceTable,
      deadLetters: async (count) => (await gatewayBus.deadLetters(count * 5)).filter((d) => d.group === 'cost-ledger').slice(0, count),
    },
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const queues = { chat: chatQueue, vision: visionQueue, reports: reportQueue, webhooks: alerting.queue } as const;

  return {
    url,
    /** The express app itself, for tests that read its routes. */
    app,
    redis,
    namespace,
    keys,
    stub,
    queues,
    reader,
    alerting,
    analytics,
    analyticsBus,
    logs,
    adminToken: FULL_ADMIN_TOKEN,
    providerKeys: FAKE_PROVIDER_KEYS,
    /** The bus stream every service publishes to. */
    busStream: gatewayBus.stream,
    deadLetterStream: gatewayBus.deadLetterStream,
    /** Jobs each queue has seen, in any state. */
    async jobCounts(): Promise<Record<keyof typeof queues, number>> {
      const out = {} as Record<keyof typeof queues, number>;
      for (const [name, q] of Object.entries(queues) as Array<[keyof typeof queues, JobCountSource]>) {
        const counts = await q.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized', 'waiting-children');
        out[name] = Object.values(counts).reduce((a, b) => a + b, 0);
      }
      return out;
    },
    async close() {
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await live.stop();
      await chatWorker.close();
      await visionWorker.close();
      await reportWorker.close();
      await ledgerBus.stop();
      await analyticsBus.stop();
      await alerting.stop();
      await alertingRedis.quit().catch(() => undefined);
      for (const q of [...chatEvents, ...visionEvents, reportEvents]) await q.close();
      for (const q of [chatQueue, visionQueue, reportQueue]) await q.close();
      await stub.close();
      chatBreakers.shutdown();
      visionBreakers.shutdown();
      for (const close of closers) await close();
      await cleanup();
    },
  };
}
export type FullSystem = Awaited<ReturnType<typeof startFullSystem>>;
