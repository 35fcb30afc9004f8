import { type AnyEvent, bucketStart, EventBus, GRAIN_MS, SKETCH_RELATIVE_ACCURACY } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { type FullSystem, startFullSystem } from './full-harness';

/**
 * Analytics end to end: a scripted mix of requests through the HTTP API (plain, streamed, failed
 * at the stub, fallbacks, a budget refusal), then the analytics API's figures against what was
 * sent, the ledger, and the exact values of the same events.
 */

let sys: FullSystem;
let alice: string;
let bob: string;
let carol: string;

beforeAll(async () => {
  sys = await startFullSystem('analytics');
  alice = (await sys.keys.create({ name: 'alice', user_id: 'alice', project_id: 'web', scopes: ['chat', 'costs'] })).key;
  bob = (await sys.keys.create({ name: 'bob', user_id: 'bob', project_id: 'mobile', scopes: ['chat', 'costs'] })).key;
  carol = (await sys.keys.create({ name: 'carol', user_id: 'carol', project_id: 'web', scopes: ['costs'] })).key;
}, 60_000);

afterAll(async () => {
  await sys?.close();
});

async function call(method: string, path: string, key: string, body?: unknown) {
  const res = await fetch(`${sys.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** Every consumer group has read the whole stream and acked it, twice in a row. */
async function busSettled(): Promise<boolean> {
  let quiet = 0;
  return waitFor(async () => {
    const groups = (await sys.redis.xinfo('GROUPS', sys.busStream)) as unknown[][];
    const busy = groups.some((g) => {
      const f = new Map<string, unknown>();
      for (let i = 0; i < g.length; i += 2) f.set(String(g[i]), g[i + 1]);
      return ['analytics', 'cost-ledger'].includes(String(f.get('name'))) && (Number(f.get('pending')) > 0 || Number(f.get('lag') ?? 0) > 0);
    });
    quiet = busy ? 0 : quiet + 1;
    return quiet >= 3;
  }, 15_000, 50);
}

const exactQuantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;
const within = (reported: unknown, exact: number) => Math.abs((reported as number) - exact) <= exact * SKETCH_RELATIVE_ACCURACY + 0.01;

const sent = { plain: 0, streamed: 0, fallback: 0, failed: 0, refused: 0 };
const ALL_METRICS = [
  'requests', 'completed', 'failed', 'errors_by_category', 'refused_budget', 'rate_limited', 'fallbacks', 'attempts', 'latency_p50', 'latency_p99',
  'ttft_p50', 'ttft_p99', 'cost_micros', 'tokens_in', 'tokens_out', 'conversion_rate', 'error_rate', 'fallback_rate', 'output_tokens_per_s',
] as const;

test('a scripted mix: counts equal what was sent, cost equals the ledger, quantiles within the sketch error, rollups agree, replay changes nothing', async () => {
  const started = Date.now();
  for (let i = 0; i < 4; i++) {
    expect((await call('POST', '/v1/chat', alice, { message: `plain ${i}` })).status).toBe(200);
    sent.plain++;
  }
  for (let i = 0; i < 3; i++) {
    const res = await call('POST', '/v1/chat/completions', alice, { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: `stream ${i}` }] });
    expect(res.status).toBe(200);
    expect(res.text).toContain('[DONE]');
    sent.streamed++;
  }
  // The first provider of the chain answers 503 once per request: each falls back.
  sys.stub.setFaults({ script: [{ provider: 'gemini', fault: '503', times: 2 }] });
  const fallbacks = [];
  for (let i = 0; i < 2; i++) {
    const res = await call('POST', '/v1/chat', alice, { message: `fallback ${i}` });
    expect(res.status).toBe(200);
    fallbacks.push(res.json.fallback_used as boolean);
    sent.fallback++;
  }
  expect(fallbacks).toEqual([true, true]);
  sys.stub.setFaults({ rate503: 1 });
  const failed = await call('POST', '/v1/chat', alice, { message: 'doomed' });
  expect(failed.json.error.category).toBe('provider_unavailable');
  sent.failed++;
  sys.stub.setFaults({});

  // Bob spends past a tiny hard budget, then is refused.
  expect((await call('POST', '/v1/chat', bob, { message: 'spend' })).status).toBe(200);
  sent.plain++;
  expect((await call('PUT', '/v1/budgets/project/mobile', sys.adminToken, { periods: [{ period: 'day', limit_micros: 1, mode: 'hard' }] })).status).toBe(201);
  expect(await waitFor(async () => (await call('GET', '/v1/budgets/project/mobile', sys.adminToken)).json.status[0].blocked === true)).toBe(true);
  expect((await call('POST', '/v1/chat', bob, { message: 'refused' })).status).toBe(402);
  sent.refused++;
  expect(await busSettled()).toBe(true);

  const query = (key: string, body: Record<string, unknown>) => call('POST', '/v1/analytics/query', key, { from: started - GRAIN_MS.minute, metrics: ALL_METRICS, ...body });
  const all = await query(sys.adminToken, { granularity: 'minute' });
  expect(all.status).toBe(200);
  const t = all.json.groups[0].totals;
  const total = sent.plain + sent.streamed + sent.fallback + sent.failed + sent.refused;
  expect(t).toMatchObject({
    requests: total,
    completed: sent.plain + sent.streamed + sent.fallback,
    failed: sent.failed,
    errors_by_category: { provider_unavailable: sent.failed },
    refused_budget: sent.refused,
    rate_limited: 0,
    conversion_rate: (sent.plain + sent.streamed + sent.fallback) / (total - sent.refused),
  });
  // The failed request tried more than one provider, so it fell back too.
  expect(t.fallbacks).toBe(sent.fallback + 1);
  expect(t.output_tokens_per_s).toBeGreaterThan(0);

  // Cost and tokens: the ledger's, to the micro-dollar, for everyone and per user.
  const ledgerDay = await sys.reader.summary({ period: 'day', at: new Date() });
  expect(t.cost_micros).toBe(ledgerDay.total.micros);
  expect(t.cost_micros).toBeGreaterThan(0);
  const entries = (await sys.reader.entries({ limit: 1_000 })).entries;
  expect(t.tokens_in).toBe(entries.reduce((a, e) => a + (e.units.input_tokens ?? 0), 0));
  expect(t.tokens_out).toBe(entries.reduce((a, e) => a + (e.units.output_tokens ?? 0), 0));
  const mine = await query(alice, { granularity: 'hour' });
  expect(mine.json.groups[0].totals.cost_micros).toBe((await sys.reader.summary({ period: 'day', at: new Date(), scope: { user: 'alice' } })).total.micros);
  expect(mine.json.groups[0].totals.requests).toBe(total - 2);

  // Quantiles against the exact values of the same events.
  const completed = (await new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'test-reader' }).history({ types: 'workflow.completed', limit: 1_000 })).map((s) => s.event as Extract<AnyEvent, { type: 'workflow.completed' }>);
  const latencies = completed.map((e) => e.data.latency_ms!);
  expect(latencies).toHaveLength(sent.plain + sent.streamed + sent.fallback);
  expect(within(t.latency_p50, exactQuantile(latencies, 0.5))).toBe(true);
  expect(within(t.latency_p99, exactQuantile(latencies, 0.99))).toBe(true);
  const ttfts = completed.filter((e) => e.data.streamed).map((e) => e.data.ttft_ms!);
  expect(ttfts).toHaveLength(sent.streamed);
  expect(within(t.ttft_p50, exactQuantile(ttfts, 0.5))).toBe(true);
  // The first content chunk comes before the end of the answer.
  for (const e of completed.filter((x) => x.data.streamed)) expect(e.data.ttft_ms!).toBeLessThanOrEqual(e.data.latency_ms!);

  const byStream = await query(sys.adminToken, { group_by: ['streamed', 'route'], granularity: 'hour', metrics: ['completed', 'ttft_p50'] });
  const streamedGroup = byStream.json.groups.find((g: { key: { streamed: string } }) => g.key.streamed === 'true');
  expect(streamedGroup).toMatchObject({ key: { streamed: 'true', route: '/v1/chat/completions' }, totals: { completed: sent.streamed } });
  expect(streamedGroup.totals.ttft_p50).not.toBeNull();
  expect(byStream.json.groups.find((g: { key: { streamed: string } }) => g.key.streamed === 'false').totals.ttft_p50).toBeNull();

  // Minute, hour and day grains give the same totals.
  for (const granularity of ['hour', 'day']) {
    expect((await query(sys.adminToken, { granularity })).json.groups[0].totals).toEqual(t);
  }

  // Redelivery of the whole stream and a replay into the service change nothing.
  const history = await new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'test-reader' }).history({ limit: 10_000 });
  const pipe = sys.redis.pipeline();
  for (const { event } of history) pipe.xadd(sys.busStream, '*', 'type', event.type, 'event', JSON.stringify(event));
  await pipe.exec();
  expect(await busSettled()).toBe(true);
  await sys.analyticsBus.replay({ since: 0, limit: 10_000 }, (e) => sys.analytics.handle(e));
  expect((await query(sys.adminToken, { granularity: 'minute' })).json.groups[0].totals).toEqual(t);
  expect(sys.analytics.stats.duplicate).toBeGreaterThanOrEqual(history.length);
}, 90_000);

test('tenants see their own user or project only; admin sees all', async () => {
  const from = bucketStart(Date.now(), 'day');
  const body = { from, metrics: ['requests'], group_by: ['user'] };
  const own = await call('POST', '/v1/analytics/query', alice, body);
  expect(own.json.groups.map((g: { key: unknown }) => g.key)).toEqual([{ user: 'alice' }]);
  // Carol (no requests of her own) sees nothing of alice, though they share the project...
  expect((await call('POST', '/v1/analytics/query', carol, body)).json.groups).toEqual([]);
  // ...unless she asks for the project's figures, which her key belongs to.
  const project = await call('POST', '/v1/analytics/query', carol, { ...body, filters: { project: 'web' } });
  expect(project.json.groups.map((g: { key: unknown }) => g.key)).toEqual([{ user: 'alice' }]);
  expect((await call('POST', '/v1/analytics/query', alice, { ...body, filters: { user: 'bob' } })).status).toBe(403);
  expect((await call('POST', '/v1/analytics/query', alice, { ...body, filters: { project: 'mobile' } })).status).toBe(403);
  const admin = await call('POST', '/v1/analytics/query', sys.adminToken, body);
  expect(admin.json.groups.map((g: { key: { user: string | null } }) => g.key.user).sort()).toEqual(['alice', 'bob']);
  // A key without the costs scope reads nothing.
  const chatOnly = (await sys.keys.create({ name: 'c', user_id: 'dan', project_id: 'web', scopes: ['chat'] })).key;
  expect((await call('POST', '/v1/analytics/query', chatOnly, body)).status).toBe(403);
});

test('bad queries get a 400 naming the field; an unbounded one is refused', async () => {
  const bad = async (body: unknown, path: string) => {
    const res = await call('POST', '/v1/analytics/query', sys.adminToken, body);
    if (res.status !== 400) throw new Error(`${JSON.stringify(body)} -> ${res.status} ${res.text.slice(0, 300)}`);
    expect(res.json.error.issues.map((i: { path: string }) => i.path)).toContain(path);
  };
  await bad({ from: '-1h', metrics: ['latency_p42'] }, 'metrics.0');
  await bad({ from: '-1h', metrics: ['requests'], group_by: ['colour'] }, 'group_by.0');
  await bad({ from: 'yesterday', metrics: ['requests'] }, 'from');
  await bad({ from: '-1h', metrics: ['requests'], filters: { tenant: 'x' } }, 'filters');
  await bad({ from: '-1h', metrics: ['requests'], granularity: 'fortnight' }, 'granularity');
  await bad({ from: '-10d', metrics: ['requests'], granularity: 'minute' }, 'granularity');
  await bad({ from: '-80d', metrics: ['requests'], granularity: 'hour' }, 'from');
  await bad({ from: '-1h', to: '-2h', metrics: ['requests'] }, 'to');
  const funnel = await call('POST', '/v1/analytics/funnel', sys.adminToken, { from: '-1h', steps: [{ event: 'workflow.started' }] });
  expect(funnel.status).toBe(400);
  expect(funnel.json.error.issues[0].path).toBe('steps');
});

test('overview and funnel over the same traffic', async () => {
  const overview = await call('GET', '/v1/analytics/overview?period=day', sys.adminToken);
  expect(overview.status).toBe(200);
  expect(overview.json.totals).toMatchObject({ requests: 12, completed: 10, failed: 1, refused_budget: 1 });
  expect(overview.json.totals.cost_micros).toBe((await sys.reader.summary({ period: 'day', at: new Date() })).total.micros);
  expect(overview.json.by_model.map((m: { model: string }) => m.model)).toEqual(expect.arrayContaining(['gpt-4o-mini']));
  expect(overview.json.conversion).toEqual([expect.objectContaining({ workflow: 'chat', started: 11, completed: 10, conversion_rate: 10 / 11 })]);
  const mine = await call('GET', '/v1/analytics/overview', bob);
  expect(mine.json.totals).toMatchObject({ requests: 2, completed: 1, refused_budget: 1 });

  // The daily cost report carries the same day's latency, error and conversion sections.
  const report = await call('GET', '/v1/costs/reports/day', sys.adminToken);
  expect(report.status).toBe(200);
  expect(report.json.analytics.totals).toMatchObject({ requests: 12, completed: 10, failed: 1, refused_budget: 1, errors_by_category: { provider_unavailable: 1 } });
  expect(report.json.analytics.totals.latency_p95).toBeGreaterThan(0);
  expect(report.json.analytics.conversion).toEqual([expect.objectContaining({ workflow: 'chat', started: 11, completed: 10 })]);

  const funnel = await call('POST', '/v1/analytics/funnel', sys.adminToken, {
    from: '-1h',
    by: 'request',
    window: '5m',
    steps: [{ event: 'workflow.started', where: { workflow: 'chat' } }, { event: 'workflow.completed' }],
  });
  expect(funnel.status).toBe(200);
  expect(funnel.json.steps.map((s: { count: number }) => s.count)).toEqual([11, 10]);
  expect(funnel.json.steps[1]).toMatchObject({ drop_off: 1, conversion_from_previous: Math.round((10 / 11) * 10_000) / 10_000 });
  expect(funnel.json.steps[1].median_ms_from_previous).toBeGreaterThan(0);
});
