import {
  AnalyticsReader,
  analyticsKeys,
  type AnyEvent,
  bucketStart,
  createEvent,
  decodeSeries,
  EventBus,
  FunnelReader,
  GRAIN_MS,
  METRIC_SEP,
  SKETCH_RELATIVE_ACCURACY,
  tenantShardNamespaces,
  tenantShardOf,
} from '@tollgate/shared';
import { testRedis, waitFor } from '@tollgate/shared/src/testing';
import { consumeForAnalytics, DEFAULT_TIMELINE_TYPES, toCounted } from '../src/consumer';
import { RollupWriter } from '../src/rollup-writer';

/**
 * The analytics service on real Redis, fed synthetic events through the real bus: counts, cost,
 * sketch quantiles against exact ones, rollups across grains, and idempotency under redelivery
 * and replay.
 */

const { redis, prefix, cleanup } = testRedis('analytics');
let publisher: EventBus;
let consumer: EventBus;
let ingest: ReturnType<typeof consumeForAnalytics>;
const reader = new AnalyticsReader(redis, prefix);
const funnels = new FunnelReader(redis, prefix);

beforeAll(async () => {
  publisher = new EventBus({ redis, prefix, service: 'chat-workflow' });
  consumer = new EventBus({ redis, prefix, service: 'analytics', blockMs: 50 });
  ingest = consumeForAnalytics(consumer, new RollupWriter(redis, prefix));
  await consumer.start();
});

afterAll(async () => {
  await consumer.stop();
  await cleanup();
});

// Deterministic pseudo-random latencies with a long tail.
function rng(seed: number) {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}
const exactQuantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;

// Fixed instants two hours ago, spread over three minutes of two hours, so rollups have something to add.
const base = bucketStart(Date.now(), 'hour') - 2 * GRAIN_MS.hour + 58 * GRAIN_MS.minute;
const at = (i: number) => new Date(base + (i % 5) * GRAIN_MS.minute + (i % 7) * 1000).toISOString();

const events: AnyEvent[] = [];
const latencies: number[] = [];
const ttfts: number[] = [];
let costSum = 0;
const N = 400;

beforeAll(() => {
  const r = rng(7);
  for (let i = 0; i < N; i++) {
    const meta = { correlation_id: `req-${i}`, user_id: `user-${i % 3}`, project_id: 'web', occurred_at: at(i), id: `ev-${i}` };
    const streamed = i % 4 === 0;
    events.push(createEvent('workflow.started', { workflow: 'chat', route: '/v1/chat', streamed }, { ...meta, id: `st-${i}` }, 'chat-workflow') as AnyEvent);
    if (i % 10 === 9) {
      events.push(
        createEvent('workflow.failed', {
          workflow: 'chat', duration_ms: 5, latency_ms: 6, attempts: 3, fallback_used: true, route: '/v1/chat', streamed,
          error: { category: 'provider_unavailable', strategy: 'fallback_provider', code: 'provider_unavailable', message: 'down', suggested_actions: [], retryable: true },
        }, { ...meta, id: `fl-${i}` }, 'chat-workflow') as AnyEvent,
      );
      continue;
    }
    const latency = Math.round(20 + r() * 200 + (r() < 0.05 ? r() * 5_000 : 0));
    latencies.push(latency);
    const ttft = streamed ? Math.round(latency * 0.3) : undefined;
    if (ttft !== undefined) ttfts.push(ttft);
    events.push(
      createEvent('workflow.completed', {
        workflow: 'chat', duration_ms: latency, latency_ms: latency, provider: 'openai', model: 'gpt-4o-mini', route: '/v1/chat', streamed,
        attempts: i % 8 === 0 ? 2 : 1, fallback_used: i % 8 === 0, output_tokens: 50, generation_ms: 100, ...(ttft !== undefined && { ttft_ms: ttft }),
      }, { ...meta, id: `ok-${i}` }, 'chat-workflow') as AnyEvent,
    );
    const amount = 1_000 + i * 37;
    costSum += amount;
    events.push(
      createEvent('cost.recorded', {
        entry_id: `le-${i}`, usage_event_id: `u-${i}`, amount_micros: amount, price_version: 'v1', provider: 'openai', model: 'gpt-4o-mini',
        service: 'chat-workflow', operation: 'chat', units: { input_tokens: 10, output_tokens: 50 }, cached: false, occurred_at: at(i), totals: [],
      }, { ...meta, id: `cost-${i}` }, 'cost-ledger') as AnyEvent,
    );
  }
});

async function publishAll(list: AnyEvent[]) {
  // XADD of the exact envelopes: what a redelivery of the same events looks like to the group.
  const pipe = redis.pipeline();
  for (const e of list) pipe.xadd(publisher.stream, '*', 'type', e.type, 'event', JSON.stringify(e));
  await pipe.exec();
}

const METRICS = ['requests', 'started', 'completed', 'failed', 'errors_by_category', 'fallbacks', 'attempts', 'latency_p50', 'latency_p99', 'ttft_p50', 'ttft_p99', 'cost_micros', 'tokens_in', 'tokens_out', 'output_tokens_per_s', 'conversion_rate'] as const;
test('counts, cost and quantiles of a scripted mix; hour and day rollups equal the minutes', async () => {
  await publishAll(events);
  expect(await waitFor(() => ingest.stats.counted === events.length, 15_000)).toBe(true);

  const minute = await reader.query({ metrics: METRICS, group_by: [], filters: {}, from: base - GRAIN_MS.hour, to: base + GRAIN_MS.hour, granularity: 'minute', limit: 10 });
  const t = minute.groups[0]!.totals;
  const failed = N / 10;
  expect(t).toMatchObject({
    requests: N,
    started: N,
    completed: N - failed,
    failed,
    errors_by_category: { provider_unavailable: failed },
    cost_micros: costSum,
    tokens_in: 10 * (N - failed),
    tokens_out: 50 * (N - failed),
    output_tokens_per_s: 500,
    conversion_rate: (N - failed) / N,
  });
  // Sketch quantiles: within the sketch's relative accuracy of the exact value at that rank.
  for (const [metric, xs, q] of [['latency_p50', latencies, 0.5], ['latency_p99', latencies, 0.99], ['ttft_p50', ttfts, 0.5], ['ttft_p99', ttfts, 0.99]] as const) {
    const exact = exactQuantile(xs, q);
    expect(Math.abs((t[metric] as number) - exact)).toBeLessThanOrEqual(exact * SKETCH_RELATIVE_ACCURACY + 0.01);
  }
  // The events span two hours and five minutes: the per-bucket series adds up to the totals.
  const perMinute = minute.groups[0]!.series.filter((p) => (p.requests as number) > 0);
  expect(perMinute).toHaveLength(5);
  expect(perMinute.reduce((a, p) => a + (p.requests as number), 0)).toBe(N);

  const hour = await reader.query({ metrics: METRICS, group_by: [], filters: {}, from: base - GRAIN_MS.hour, to: base + GRAIN_MS.hour, granularity: 'hour', limit: 10 });
  expect(hour.groups[0]!.series.filter((p) => (p.requests as number) > 0)).toHaveLength(2);
  expect(hour.groups[0]!.totals).toEqual(t);
  const day = await reader.query({ metrics: METRICS, group_by: [], filters: {}, from: base - GRAIN_MS.hour, to: base + GRAIN_MS.hour, granularity: 'day', limit: 10 });
  expect(day.groups[0]!.totals).toEqual(t);

  // Field by field: every sum and sketch bin of the hour buckets is the sum of its minutes.
  for (const h of [bucketStart(base, 'hour'), bucketStart(base, 'hour') + GRAIN_MS.hour]) {
    const sums = new Map<string, number>();
    for (let m = h; m < h + GRAIN_MS.hour; m += GRAIN_MS.minute) {
      for (const [f, v] of Object.entries(await reader.bucket('minute', m))) sums.set(f, (sums.get(f) ?? 0) + Number(v));
    }
    const hourly = await reader.bucket('hour', h);
    expect(Object.keys(hourly).length).toBeGreaterThan(0);
    expect(Object.fromEntries(Object.entries(hourly).map(([f, v]) => [f, Number(v)]))).toEqual(Object.fromEntries(sums));
    expect(Object.keys(hourly).some((f) => f.split(METRIC_SEP)[1]!.startsWith('lat:'))).toBe(true);
  }
});

test('a redelivered or replayed stream changes no figure', async () => {
  const before = await reader.query({ metrics: METRICS, group_by: ['user', 'streamed'], filters: {}, from: base - GRAIN_MS.hour, to: base + GRAIN_MS.hour, granularity: 'minute', limit: 100 });
  const counted = ingest.stats.counted;
  // The same envelopes again, through the stream...
  await publishAll(events);
  expect(await waitFor(() => ingest.stats.duplicate >= events.length, 15_000)).toBe(true);
  // ...republished by a redelivered producer: same id, a new time (another minute, even hour)...
  const moved = events.map((e) => ({ ...e, occurred_at: new Date(Date.parse(e.occurred_at) + 61 * GRAIN_MS.minute).toISOString() }));
  await publishAll(moved);
  expect(await waitFor(() => ingest.stats.duplicate >= 2 * events.length, 15_000)).toBe(true);
  // ...and as a replay of the bus history straight into the handler.
  const replayed = await consumer.replay({ since: 0, limit: 10_000 }, (e) => ingest.handle(e));
  expect(replayed).toBeGreaterThanOrEqual(events.length);
  expect(ingest.stats.counted).toBe(counted);
  const after = await reader.query({ metrics: METRICS, group_by: ['user', 'streamed'], filters: {}, from: base - GRAIN_MS.hour, to: base + GRAIN_MS.hour, granularity: 'minute', limit: 100 });
  expect(after).toEqual(before);
  // Three users by streamed true/false, and cost (which has no streamed dimension) under null.
  expect(before.total_groups).toBe(9);
});

test('filters and tenant dimensions isolate series', async () => {
  const q = await reader.query({ metrics: ['requests', 'cost_micros'], group_by: ['user'], filters: { user: ['user-1'] }, from: base - GRAIN_MS.hour, to: base + GRAIN_MS.hour, granularity: 'hour', limit: 100 });
  expect(q.groups.map((g) => g.key)).toEqual([{ user: 'user-1' }]);
  const expected = events.filter((e) => e.user_id === 'user-1' && e.type === 'workflow.started').length;
  expect(q.groups[0]!.totals.requests).toBe(expected);
});

test('bad ranges are refused naming the field', async () => {
  await expect(reader.query({ metrics: ['requests'], group_by: [], filters: {}, from: Date.now() - 10 * GRAIN_MS.day, to: Date.now(), granularity: 'minute', limit: 10 })).rejects.toMatchObject({
    issues: [expect.objectContaining({ path: ['granularity'] })],
  });
  await expect(reader.query({ metrics: ['requests'], group_by: [], filters: {}, from: Date.now() - 80 * GRAIN_MS.day, to: Date.now(), granularity: 'hour', limit: 10 })).rejects.toMatchObject({
    issues: [expect.objectContaining({ path: ['from'] })],
  });
  await expect(reader.query({ metrics: ['requests'], group_by: [], filters: {}, from: Date.now(), to: Date.now() - 1, granularity: 'auto', limit: 10 })).rejects.toMatchObject({
    issues: [expect.objectContaining({ path: ['to'] })],
  });
});

test('funnels: step conversion, drop-off and median time between steps over the timelines', async () => {
  const r = await funnels.run({
    steps: [{ event: 'workflow.started' }, { event: 'workflow.completed' }],
    window_ms: GRAIN_MS.hour,
    from: base - GRAIN_MS.hour,
    to: base + GRAIN_MS.hour,
    by: 'request',
  });
  const failed = N / 10;
  expect(r.subjects).toBe(N);
  expect(r.steps.map((s) => [s.count, s.drop_off])).toEqual([[N, 0], [N - failed, failed]]);
  expect(r.steps[1]!.conversion_from_previous).toBe((N - failed) / N);
  // started and completed share an instant in this script.
  expect(r.steps[1]!.median_ms_from_previous).toBe(0);

  // By user across requests, with a step narrowed by data: one user never fails twice in a row here.
  const byUser = await funnels.run({
    steps: [{ event: 'workflow.failed' }, { event: 'workflow.completed', where: { workflow: 'chat' } }],
    window_ms: 10 * GRAIN_MS.minute,
    from: base - GRAIN_MS.hour,
    to: base + GRAIN_MS.hour,
    by: 'user',
    users: ['user-0'],
  });
  expect(byUser.subjects).toBe(1);
  expect(byUser.steps[1]!.count).toBe(1);
  expect(byUser.steps[1]!.median_ms_from_previous).toBeGreaterThanOrEqual(0);
});

test('tenant shards: a project is counted in its own shard, queries read every shard or its alone, funnels span them', async () => {
  const ns = `${prefix}:sharded`;
  const SHARDS = 4;
  const writer = new RollupWriter(redis, ns, Date.now, SHARDS);
  const sharded = new AnalyticsReader(redis, ns, Date.now, SHARDS);
  const shardedFunnels = new FunnelReader(redis, ns, Date.now, SHARDS);
  const hour = bucketStart(base, 'hour');
  // Project j sends j + 1 requests, all completed.
  const projects = Array.from({ length: 12 }, (_, j) => `proj-${j}`);
  const evs: AnyEvent[] = [];
  projects.forEach((project, j) => {
    for (let i = 0; i <= j; i++) {
      const meta = { correlation_id: `sh-${j}-${i}`, user_id: `user-${j % 5}`, project_id: project, occurred_at: at(i) };
      evs.push(createEvent('workflow.started', { workflow: 'chat', route: '/v1/chat', streamed: false }, { ...meta, id: `sh-st-${j}-${i}` }, 'chat-workflow') as AnyEvent);
      evs.push(
        createEvent('workflow.completed', {
          workflow: 'chat', duration_ms: 30, latency_ms: 30, provider: 'openai', model: 'gpt-4o-mini', route: '/v1/chat', streamed: false,
          attempts: 1, fallback_used: false, output_tokens: 10, generation_ms: 20,
        }, { ...meta, id: `sh-co-${j}-${i}` }, 'chat-workflow') as AnyEvent,
      );
    }
  });
  const counted = evs.map((e) => toCounted(e, DEFAULT_TIMELINE_TYPES));
  expect(new Set(await writer.writeMany(counted))).toEqual(new Set(['counted']));

  // Each project's series are in its shard and no other; the projects use more than one shard.
  const placed = new Map<string, Set<number>>();
  const namespaces = tenantShardNamespaces(ns, SHARDS);
  for (let s = 0; s < SHARDS; s++) {
    for (const field of Object.keys(await redis.hgetall(analyticsKeys(namespaces[s]!).bucket('hour', hour)))) {
      const project = decodeSeries(field.split(METRIC_SEP)[0]!).project!;
      if (!placed.has(project)) placed.set(project, new Set());
      placed.get(project)!.add(s);
    }
  }
  expect([...placed.keys()].sort()).toEqual([...projects].sort());
  for (const [project, shards] of placed) expect([...shards]).toEqual([tenantShardOf(project, SHARDS)]);
  expect(new Set([...placed.values()].map((s) => [...s][0])).size).toBeGreaterThan(1);

  const range = { from: hour, to: hour + 2 * GRAIN_MS.hour, granularity: 'hour' as const, limit: 100 };
  const all = await sharded.query({ ...range, metrics: ['requests', 'completed'], group_by: ['project'], filters: {} });
  expect(Object.fromEntries(all.groups.map((g) => [g.key.project, g.totals.requests]))).toEqual(Object.fromEntries(projects.map((p, j) => [p, j + 1])));
  const one = await sharded.query({ ...range, metrics: ['requests', 'completed'], group_by: [], filters: { project: ['proj-7'] } });
  expect(one.groups[0]!.totals).toMatchObject({ requests: 8, completed: 8 });
  // A reader that saw one shard (TENANT_SHARDS unset beside writers with 4) would miss projects.
  const unsharded = await new AnalyticsReader(redis, ns, Date.now, 1).query({ ...range, metrics: ['requests'], group_by: [], filters: {} });
  expect(unsharded.groups[0]?.totals.requests ?? 0).toBeLessThan(78);

  const funnel = await shardedFunnels.run({ steps: [{ event: 'workflow.started' }, { event: 'workflow.completed' }], window_ms: GRAIN_MS.hour, from: hour, to: hour + 2 * GRAIN_MS.hour, by: 'request' });
  expect(funnel.steps.map((s) => s.count)).toEqual([78, 78]);
  const ofOne = await shardedFunnels.run({ steps: [{ event: 'workflow.started' }], window_ms: GRAIN_MS.hour, from: hour, to: hour + 2 * GRAIN_MS.hour, by: 'request', projects: ['proj-11'] });
  expect(ofOne.steps[0]!.count).toBe(12);

  // Delivered again: each event finds itself in its shard's seen set.
  expect(new Set(await writer.writeMany(counted))).toEqual(new Set(['duplicate']));
  expect(await sharded.query({ ...range, metrics: ['requests', 'completed'], group_by: ['project'], filters: {} })).toEqual(all);
});
