import type { AddressInfo } from 'node:net';
import { Queue, QueueEvents } from 'bullmq';
import {
  ApiKeyStore,
  type ChatJob,
  type ChatJobResult,
  type CostReport,
  createRedis,
  ErrorRateTracker,
  EventBus,
  type EventMeta,
  LedgerReader,
  loadPriceTable,
  price,
  PartitionedQueue,
  QUEUES,
  queuePrefix,
  type ReportJob,
  type UsageUnits,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis, waitFor } from '@tollgate/shared/src/testing';
import { consumeUsage } from '@tollgate/cost-ledger/src/ledger-consumer';
import { LedgerWriter } from '@tollgate/cost-ledger/src/ledger-writer';
import { createReportWorker } from '@tollgate/cost-ledger/src/reports';
import { createApp } from '../src/app';
import { ChatDispatcher } from '../src/chat-dispatch';
import { createMetrics } from '../src/metrics';
import { ReportDispatcher } from '../src/report-dispatch';

/** The cost API over a real ledger: usage events in through the bus, HTTP out. */

const { redis, prefix: ns, cleanup } = testRedis('gw-costs');
const table = loadPriceTable();
const closers: Array<() => Promise<unknown>> = [];
let url = '';
let ledgerBus: EventBus;
let publisher: EventBus;
const key = { admin: '', alice: '', bob: '' };

beforeAll(async () => {
  ledgerBus = new EventBus({ redis, prefix: ns, service: 'cost-ledger', blockMs: 50, handlerAttempts: 1 });
  consumeUsage(ledgerBus, new LedgerWriter(redis, ns), table);
  await ledgerBus.start();
  publisher = new EventBus({ redis, prefix: ns, service: 'chat-workflow' });

  const qPrefix = queuePrefix(ns);
  const blocking = [createRedis(TEST_REDIS_URL, { blocking: true }), createRedis(TEST_REDIS_URL, { blocking: true }), createRedis(TEST_REDIS_URL, { blocking: true })];
  const reader = new LedgerReader(redis, ns);
  const reportWorker = createReportWorker({ reader, redis, bus: ledgerBus, namespace: ns }, blocking[0]!);
  const reportQueue = new Queue<ReportJob, CostReport>(QUEUES.reports, { connection: redis, prefix: qPrefix });
  const reportEvents = new QueueEvents(QUEUES.reports, { connection: blocking[1]!, prefix: qPrefix });
  const chatQueue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace: ns, partitions: 1, connection: redis });
  const chatEvents = new QueueEvents(QUEUES.chat, { connection: blocking[2]!, prefix: qPrefix });
  await Promise.all([reportEvents.waitUntilReady(), chatEvents.waitUntilReady(), reportWorker.waitUntilReady()]);

  const keys = new ApiKeyStore(redis, ns);
  key.admin = (await keys.create({ name: 'ops', user_id: 'ops', project_id: 'ops', scopes: ['admin'] })).key;
  key.alice = (await keys.create({ name: 'a', user_id: 'alice', project_id: 'web', scopes: ['costs'] })).key;
  key.bob = (await keys.create({ name: 'b', user_id: 'bob', project_id: 'web', scopes: ['chat'] })).key;
  const app = createApp({
    redis,
    namespace: ns,
    keys,
    dispatcher: new ChatDispatcher(chatQueue, [chatEvents], redis, ns, 5_000),
    metrics: createMetrics([], new ErrorRateTracker()),
    priceTable: table,
    adminToken: undefined,
    maxBodyBytes: 1024 * 1024,
    rateLimitPerMinute: 10_000,
    costs: {
      reader,
      reports: new ReportDispatcher(reportQueue, reportEvents, redis, ns),
      priceTable: table,
      deadLetters: async (n) => (await ledgerBus.deadLetters(n)).filter((d) => d.group === 'cost-ledger'),
    },
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  closers.push(
    () => new Promise((r) => server.close(r)),
    () => ledgerBus.stop(),
    () => reportWorker.close(),
    () => reportEvents.close(),
    () => reportQueue.close(),
    () => chatEvents.close(),
    () => chatQueue.close(),
    () => Promise.all(blocking.map((c) => c.quit())),
  );

  await publisher.publishMany(USAGE.map(toEvent));
  expect(await waitFor(async () => (await reader.entries({ limit: 1000 })).entries.length === USAGE.length)).toBe(true);
});

afterAll(async () => {
  for (const close of closers) await close();
  await cleanup();
});

type Usage = { user: string; project: string; provider: string; model: string; operation: string; units: UsageUnits; at: string; fp?: string };
const fp = (c: string) => c.repeat(64);
// Ten days into November 2026 (30 days), so month projections are x3.
const USAGE: Usage[] = [
  { user: 'alice', project: 'web', provider: 'openai', model: 'gpt-4o-mini', operation: 'chat', units: { input_tokens: 1200, output_tokens: 400 }, at: '2026-11-10T08:00:00.000Z', fp: fp('a') },
  { user: 'alice', project: 'web', provider: 'openai', model: 'gpt-4o-mini', operation: 'chat', units: { input_tokens: 1200, output_tokens: 400 }, at: '2026-11-10T08:01:00.000Z', fp: fp('a') },
  { user: 'alice', project: 'web', provider: 'openai', model: 'gpt-4o-mini', operation: 'chat', units: { input_tokens: 1200, output_tokens: 400 }, at: '2026-11-10T08:02:00.000Z', fp: fp('a') },
  { user: 'alice', project: 'web', provider: 'openai', model: 'gpt-4o', operation: 'chat', units: { input_tokens: 3000, output_tokens: 12 }, at: '2026-11-10T09:00:00.000Z', fp: fp('b') },
  { user: 'alice', project: 'web', provider: 'gemini', model: 'gemini-2.0-flash', operation: 'vision', units: { images: 1 }, at: '2026-11-10T10:00:00.000Z' },
  { user: 'bob', project: 'web', provider: 'gemini', model: 'gemini-2.0-flash', operation: 'vision', units: { images: 1 }, at: '2026-11-10T11:00:00.000Z' },
  { user: 'bob', project: 'mobile', provider: 'deepseek', model: 'deepseek-vl2', operation: 'vision', units: { images: 1 }, at: '2026-11-10T12:00:00.000Z' },
  { user: 'carol', project: 'mobile', provider: 'deepseek', model: 'deepseek-chat', operation: 'chat', units: { input_tokens: 5000, output_tokens: 900 }, at: '2026-11-09T23:59:59.999Z' },
];
const costOf = (u: Usage) => price({ provider: u.provider, model: u.model, units: u.units }, { table }).amount_micros;

function toEvent(u: Usage, i: number) {
  const meta: EventMeta = { id: `cost-api-${i}`, correlation_id: `r${i}`, user_id: u.user, project_id: u.project, occurred_at: u.at };
  return {
    type: 'usage.recorded' as const,
    data: {
      provider: u.provider, model: u.model, service: u.operation === 'vision' ? 'vision' : 'chat-workflow', operation: u.operation,
      units: u.units, usage_source: 'provider' as const, request_id: `r${i}`, cached: false, ...(u.fp && { request_fingerprint: u.fp }),
    },
    meta,
  };
}

async function get(path: string, k: string) {
  const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${k}` } });
  const text = await res.text();
  let json: Record<string, any> = {};
  try {
    json = JSON.parse(text);
  } catch {
    // CSV
  }
  return { status: res.status, text, json, headers: res.headers };
}

const sum = (list: Usage[]) => list.reduce((s, u) => s + costOf(u), 0);
const nov10 = USAGE.filter((u) => u.at.startsWith('2026-11-10'));

test('summary: totals and groups equal the entries, in integer micros and exact USD strings', async () => {
  const r = await get('/v1/costs/summary?period=day&at=2026-11-10&group_by=model', key.admin);
  expect(r.status).toBe(200);
  expect(r.json).toMatchObject({ period: 'day', period_key: '2026-11-10', entries: nov10.length, scope: 'all' });
  expect(r.json.total.micros).toBe(sum(nov10));
  expect(r.json.total.usd).toBe((sum(nov10) / 1e6).toFixed(6));
  const byModel = Object.fromEntries(r.json.groups.map((g: { key: string; micros: number }) => [g.key, g.micros]));
  expect(byModel['gemini/gemini-2.0-flash']).toBe(500_000);
  expect(byModel['deepseek/deepseek-vl2']).toBe(30_000);
  expect(byModel['openai/gpt-4o-mini']).toBe(sum(nov10.filter((u) => u.model === 'gpt-4o-mini')));

  const month = await get('/v1/costs/summary?period=month&at=2026-11-15&group_by=project', key.admin);
  expect(month.json.total.micros).toBe(sum(USAGE));
  expect(month.json.groups.map((g: { key: string }) => g.key).sort()).toEqual(['mobile', 'web']);
});

test('a key sees only its own spend; another user is 403; admin sees anyone', async () => {
  const own = await get('/v1/costs/summary?period=day&at=2026-11-10&group_by=provider', key.alice);
  expect(own.status).toBe(200);
  expect(own.json.scope).toEqual({ user: 'alice' });
  expect(own.json.total.micros).toBe(sum(nov10.filter((u) => u.user === 'alice')));
  expect((await get('/v1/costs/summary?user_id=bob', key.alice)).status).toBe(403);
  expect((await get('/v1/costs/entries?user_id=bob', key.alice)).status).toBe(403);
  expect((await get('/v1/costs/entries?project_id=mobile', key.alice)).status).toBe(403);
  expect((await get('/v1/costs/summary?group_by=user', key.alice)).status).toBe(403);
  expect((await get('/v1/costs/summary', key.bob)).status).toBe(403); // no costs scope
  const project = await get('/v1/costs/summary?period=day&at=2026-11-10&project_id=web', key.alice);
  expect(project.json.total.micros).toBe(sum(nov10.filter((u) => u.project === 'web')));
  const asAdmin = await get('/v1/costs/entries?user_id=bob', key.admin);
  expect(asAdmin.json.entries.map((e: { user_id: string }) => e.user_id)).toEqual(['bob', 'bob']);
});

test('invalid query parameters are 400 with the issues', async () => {
  const bad = await get('/v1/costs/summary?period=year&at=yesterday&group_by=colour&extra=1', key.admin);
  expect(bad.status).toBe(400);
  expect(bad.json.error.code).toBe('validation_failed');
  expect(bad.json.error.issues.map((i: { path: string }) => i.path).sort()).toEqual(['(body)', 'at', 'group_by', 'period']);
  expect((await get('/v1/costs/entries?limit=0', key.admin)).status).toBe(400);
  expect((await get('/v1/costs/entries?limit=abc', key.admin)).status).toBe(400);
  expect((await get('/v1/costs/entries?cursor=%24%24', key.admin)).status).toBe(400);
  expect((await get('/v1/costs/reports/year', key.admin)).status).toBe(400);
});

test('entries page through in time order with a cursor, filter, and carry exact money', async () => {
  const seen: string[] = [];
  let cursor = '';
  for (let pages = 0; pages < 10; pages++) {
    const r = await get(`/v1/costs/entries?limit=3${cursor ? `&cursor=${cursor}` : ''}`, key.admin);
    expect(r.status).toBe(200);
    seen.push(...r.json.entries.map((e: { occurred_at: string }) => e.occurred_at));
    if (!r.json.next_cursor) break;
    cursor = r.json.next_cursor;
  }
  expect(seen).toEqual([...USAGE.map((u) => u.at)].sort());
  const vision = await get('/v1/costs/entries?operation=vision&from=2026-11-10T10:30:00Z', key.admin);
  expect(vision.json.entries.map((e: { amount_micros: number; amount_usd: string }) => [e.amount_micros, e.amount_usd])).toEqual([
    [250_000, '0.250000'],
    [30_000, '0.030000'],
  ]);
});

test('CSV export has a header and one exact row per entry', async () => {
  const r = await get('/v1/costs/entries.csv?project_id=mobile', key.admin);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/text\/csv/);
  const lines = r.text.trim().split('\n');
  expect(lines[0]).toMatch(/^entry_id,occurred_at,user_id,project_id,service,operation,provider,model,/);
  expect(lines).toHaveLength(3);
  const amounts = lines.slice(1).map((l) => l.split(',')[14]);
  expect(amounts.map(Number).reduce((a, b) => a + b, 0)).toBe(sum(USAGE.filter((u) => u.project === 'mobile')));
});

test('reports: built by the ledger worker on demand, stored, announced, compared with the previous period', async () => {
  const r = await get('/v1/costs/reports/day?at=2026-11-10', key.admin);
  expect(r.status).toBe(200);
  expect(r.json).toMatchObject({ period: 'day', period_key: '2026-11-10', entries: nov10.length });
  expect(r.json.total.micros).toBe(sum(nov10));
  expect(r.json.previous_total.micros).toBe(sum(USAGE.filter((u) => u.at.startsWith('2026-11-09'))));
  expect(r.json.change.micros).toBe(r.json.total.micros - r.json.previous_total.micros);
  expect(r.json.top.users.map((u: { key: string; micros: number }) => [u.key, u.micros])).toEqual([
    ['bob', sum(nov10.filter((u) => u.user === 'bob'))],
    ['alice', sum(nov10.filter((u) => u.user === 'alice'))],
  ]);
  expect(r.json.top.models[0]).toMatchObject({ key: 'gemini/gemini-2.0-flash', micros: 500_000 });
  const events = await publisher.history({ types: 'cost.report_generated' });
  expect(events.map((e) => e.event.type === 'cost.report_generated' && e.event.data)).toContainEqual(
    expect.objectContaining({ period: 'day', period_key: '2026-11-10', total_micros: sum(nov10) }),
  );
  // Closed period: the stored report is served again without a new job.
  const again = await get('/v1/costs/reports/day?at=2026-11-10', key.admin);
  expect(again.json.generated_at).toBe(r.json.generated_at);
  expect((await get('/v1/costs/reports/day', key.alice)).status).toBe(403);
});

test('recommendations come from the ledger data, with a monthly saving and the evidence', async () => {
  const r = await get('/v1/costs/recommendations?at=2026-11-10T12:00:00Z', key.admin);
  expect(r.status).toBe(200);
  const byId = Object.fromEntries(r.json.recommendations.map((x: { id: string }) => [x.id, x]));
  // Two Gemini images so far in 10 of 30 days: 2 x (250,000 - 30,000) x 3.
  expect(byId.vision_to_deepseek.estimated_monthly_saving.micros).toBe(2 * 220_000 * 3);
  expect(byId.vision_to_deepseek.title).toMatch(/88% less/);
  // Four fingerprinted requests, two distinct: two repeats at the average cost, x3.
  const fingerprinted = USAGE.filter((u) => u.fp);
  const avg = sum(fingerprinted) / fingerprinted.length;
  expect(byId.cache_repeated_requests.evidence).toMatchObject({ requests_this_month: 4, distinct_requests: 2, repeated_requests: 2 });
  expect(byId.cache_repeated_requests.estimated_monthly_saving.micros).toBe(Math.round(2 * avg * 3));
  // gpt-4o answered in 12 tokens: gpt-4o-mini's output rate is 6% of it.
  const short = costOf(USAGE[3]!);
  expect(byId.cheaper_model_for_short_outputs.estimated_monthly_saving.micros).toBe(Math.round(short * (1 - 600_000 / 10_000_000) * 3));
  expect(byId.cheaper_model_for_short_outputs.evidence.model).toBe('openai/gpt-4o');
});

test('usage with an unknown model is visible in the dead letters with its reason', async () => {
  await publisher.publishMany([{ ...toEvent({ ...USAGE[0]!, model: 'gpt-99-ultra' }, 99) }]);
  expect(await waitFor(async () => (await get('/v1/costs/dead-letters', key.admin)).json.dead_letters?.length === 1)).toBe(true);
  const [dead] = (await get('/v1/costs/dead-letters', key.admin)).json.dead_letters;
  expect(dead.reason).toMatch(/gpt-99-ultra/);
  expect(dead.event.data.model).toBe('gpt-99-ultra');
  expect((await get('/v1/costs/dead-letters', key.alice)).status).toBe(403);
});
