import { createHash, randomUUID } from 'node:crypto';
import { BreakerRegistry, CacheSettingsStore, createProviderClients, DEFAULT_CACHE_SETTINGS, EventBus, loadPriceTable, ResponseCache, tenantPrefix, type VisionJob, visionImageKey } from '@tollgate/shared';
import { keysMatching, testRedis } from '@tollgate/shared/src/testing';
import { startStub, stubEndpoints, type StubServer } from '@tollgate/stub-llm';
import { runVisionWorkflow, visionCacheKey, type VisionDeps, type VisionStep } from '../src/vision-workflow';
import { png1x1 } from './images';

/** The workflow on its own, without queue or gateway: cache lifetime, expired uploads, the budget hook. */

let stub: StubServer;
let ctx: ReturnType<typeof testRedis>;
let bus: EventBus;
let breakers: BreakerRegistry;

beforeAll(async () => {
  stub = await startStub({ port: 0, quiet: true });
  ctx = testRedis('vision-workflow');
  bus = new EventBus({ redis: ctx.redis, prefix: ctx.prefix, service: 'vision' });
  breakers = new BreakerRegistry();
});
afterAll(async () => {
  breakers.shutdown();
  await stub.close();
  await ctx.cleanup();
});

function deps(overrides: Partial<VisionDeps> = {}): VisionDeps {
  return {
    bus,
    redis: ctx.redis,
    namespace: ctx.prefix,
    clients: createProviderClients(
      stubEndpoints(stub.url),
      2_000,
    ),
    breakers,
    cache: new ResponseCache(ctx.redis, ctx.prefix),
    cacheSettings: new CacheSettingsStore(ctx.redis, ctx.prefix),
    priceTable: loadPriceTable(),
    nearHardBudget: async () => false,
    callTimeoutMs: 2_000,
    maxAttempts: 1,
    ...overrides,
  };
}

/** Parks an image the way the gateway does and returns a job naming it. */
async function jobFor(image: Buffer, fields: Partial<VisionJob> = {}): Promise<VisionJob> {
  const imageKey = randomUUID();
  await ctx.redis.set(visionImageKey(ctx.prefix, imageKey), image, 'EX', 60);
  return {
    request_id: `req-${randomUUID()}`,
    user_id: 'u1',
    project_id: 'p1',
    image_key: imageKey,
    mime_type: 'image/png',
    prompt: 'What is in the picture?',
    quality: 'standard',
    deadline_at: Date.now() + 10_000,
    ...fields,
  };
}

test('a cached analysis expires with its TTL, after which the question is paid for again', async () => {
  const d = deps({ cacheSettings: new CacheSettingsStore(ctx.redis, ctx.prefix, { ...DEFAULT_CACHE_SETTINGS, vision_ttl_seconds: 1 }) });
  const image = png1x1([10, 20, 30]);
  const first = await runVisionWorkflow(await jobFor(image), 'j1', d);
  const second = await runVisionWorkflow(await jobFor(image), 'j2', d);
  expect([first.ok && first.cached, second.ok && second.cached]).toEqual([false, true]);
  const key = (await keysMatching(ctx.redis, `${tenantPrefix(ctx.prefix, 'p1', 'u1')}vision:*`)).find((k) => !k.endsWith(':lock'))!;
  expect(await ctx.redis.ttl(key)).toBeLessThanOrEqual(1);
  await new Promise((r) => setTimeout(r, 1_100));
  const third = await runVisionWorkflow(await jobFor(image), 'j3', d);
  expect(third.ok && third.cached).toBe(false);
});

test('progress is reported at each step, in order', async () => {
  const steps: VisionStep[] = [];
  const result = await runVisionWorkflow(await jobFor(png1x1([4, 5, 6])), 'j-progress', deps(), async (s) => {
    steps.push(s);
  });
  expect(result.ok).toBe(true);
  expect(steps).toEqual(['started', 'image_loaded', 'cache_checked', 'analyzing', 'completed']);
});

test('an upload that expired fails the job as a timeout, with no provider call and no usage', async () => {
  const before = stub.stats().totals.requests;
  const job = await jobFor(png1x1());
  await ctx.redis.del(visionImageKey(ctx.prefix, job.image_key));
  const result = await runVisionWorkflow(job, 'j-expired', deps());
  expect(result).toMatchObject({ ok: false, error: { category: 'timeout', http_status: 504 } });
  expect(stub.stats().totals.requests).toBe(before);
  const types = (await bus.history({ filter: { correlation_id: job.request_id } })).map((e) => e.event.type);
  expect(types).toEqual(['workflow.started', 'error.occurred', 'workflow.failed']);
});

test('a job past its deadline is not paid for', async () => {
  const before = stub.stats().totals.requests;
  const result = await runVisionWorkflow(await jobFor(png1x1([7, 7, 7]), { deadline_at: Date.now() - 1 }), 'j-late', deps());
  expect(result).toMatchObject({ ok: false, error: { code: 'deadline_exceeded' } });
  expect(stub.stats().totals.requests).toBe(before);
});

test('a failing budget hook serves the requested quality rather than failing the request', async () => {
  const warnings: string[] = [];
  const d = deps({
    nearHardBudget: async () => {
      throw new Error('alerting unreachable');
    },
    logger: { warn: (message) => warnings.push(message) },
  });
  const result = await runVisionWorkflow(await jobFor(png1x1([1, 1, 1]), { quality: 'high' }), 'j-hook', d);
  expect(result).toMatchObject({ ok: true, provider: 'gemini', degraded: false });
  expect(warnings).toEqual([expect.stringMatching(/nearHardBudget/)]);
});

test('the lock is released after a failed analysis, so a retry is not kept waiting', async () => {
  stub.setFaults({ rate503: 1 });
  try {
    const image = png1x1([2, 4, 8]);
    const failed = await runVisionWorkflow(await jobFor(image), 'j-fail', deps());
    expect(failed.ok).toBe(false);
  } finally {
    stub.setFaults({});
  }
  expect(await keysMatching(ctx.redis, `${tenantPrefix(ctx.prefix, 'p1')}*:lock`)).toEqual([]);
  const started = Date.now();
  const retried = await runVisionWorkflow(await jobFor(png1x1([2, 4, 8])), 'j-retry', deps());
  expect(retried).toMatchObject({ ok: true, cached: false });
  expect(Date.now() - started).toBeLessThan(2_000);
});

test('a job run again after its worker died takes back its own claim instead of waiting for it to expire', async () => {
  const image = png1x1([3, 6, 9]);
  const job = await jobFor(image);
  const d = deps();
  // What a SIGKILLed run leaves behind: its claim on the question, held until the deadline.
  const claimKey = visionCacheKey(ctx.prefix, job, createHash('sha256').update(image).digest('hex'), { provider: 'deepseek', model: 'deepseek-vl2' });
  expect(await d.cache.claim(claimKey, 10_000, 'job:j-crashed')).toBe('job:j-crashed');
  // Another job still waits for the holder...
  expect(await d.cache.claim(claimKey, 10_000, 'job:j-other')).toBeUndefined();
  // ...but BullMQ's re-run of the same job proceeds at once and pays.
  const started = Date.now();
  const rerun = await runVisionWorkflow(job, 'j-crashed', d);
  expect(rerun).toMatchObject({ ok: true, cached: false });
  expect(Date.now() - started).toBeLessThan(2_000);
  expect(await keysMatching(ctx.redis, `${tenantPrefix(ctx.prefix, 'p1')}*:lock`)).toEqual([]);
});
