import {
  type CostAlert,
  EventBus,
  type EventMeta,
  LedgerReader,
  loadPriceTable,
  price,
  reachedPct,
  type UsageUnits,
} from '@tollgate/shared';
import { keysMatching, waitFor } from '@tollgate/shared/src/testing';
import { alertNotices, groupDrained, startTestAlerting, type TestAlerting } from '@tollgate/alerting/test/helpers';
import { consumeUsage } from '@tollgate/cost-ledger/src/ledger-consumer';
import { LedgerWriter } from '@tollgate/cost-ledger/src/ledger-writer';
import { ADMIN_TOKEN, startSystem, type System } from './harness';

/**
 * Budget alerts against the real ledger: usage.recorded -> cost-ledger -> cost.recorded -> two
 * alerting instances, budgets set through the API. Alerting tracks only scopes with a budget, so a
 * budget set mid-period starts from the ledger's running totals, and an alert's top contributors
 * are the ledger's own aggregates.
 */

const table = loadPriceTable();
let sys: System;
let ledgerBus: EventBus;
let reader: LedgerReader;
let a: TestAlerting;
let b: TestAlerting;
let n = 0;

beforeAll(async () => {
  sys = await startSystem('gw-alerts-ledger');
  ledgerBus = new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'cost-ledger', blockMs: 50 });
  consumeUsage(ledgerBus, new LedgerWriter(sys.redis, sys.namespace), table);
  await ledgerBus.start();
  reader = new LedgerReader(sys.redis, sys.namespace);
  [a, b] = await Promise.all([startTestAlerting(sys.namespace), startTestAlerting(sys.namespace)]);
});
afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
  await ledgerBus.stop();
  await sys.close();
});

interface Call {
  user: string;
  project: string;
  model: 'gpt-4o-mini' | 'deepseek-chat' | 'gemini-2.0-flash' | 'gemini-image';
  tokens?: number;
}

const PROVIDER = { 'gpt-4o-mini': 'openai', 'deepseek-chat': 'deepseek', 'gemini-2.0-flash': 'gemini', 'gemini-image': 'gemini' } as const;
const unitsOf = (c: Call): UsageUnits => (c.model === 'gemini-image' ? { images: 1 } : { input_tokens: c.tokens ?? 1_000, output_tokens: Math.round((c.tokens ?? 1_000) / 2) });
const modelOf = (c: Call) => (c.model === 'gemini-image' ? 'gemini-2.0-flash' : c.model);
const costOf = (c: Call) => price({ provider: PROVIDER[c.model], model: modelOf(c), units: unitsOf(c) }, { table }).amount_micros;

/** What a worker publishes for each provider call; the ledger prices it and publishes cost.recorded. */
function usage(c: Call, id = `call-${n++}`) {
  const vision = c.model === 'gemini-image';
  const meta: EventMeta = { id, correlation_id: `req-${id}`, user_id: c.user, project_id: c.project };
  return {
    type: 'usage.recorded' as const,
    data: {
      provider: PROVIDER[c.model],
      model: modelOf(c),
      service: vision ? 'vision' : 'chat-workflow',
      operation: vision ? 'vision' : 'chat',
      units: unitsOf(c),
      usage_source: 'provider' as const,
      request_id: `r-${id}`,
      cached: false,
    },
    meta,
  };
}

const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
async function putBudget(scope: 'user' | 'project', id: string, limit: number) {
  const res = await fetch(`${sys.url}/v1/budgets/${scope}/${id}`, { method: 'PUT', headers: admin, body: JSON.stringify({ periods: [{ period: 'day', limit_micros: limit }] }) });
  return { status: res.status, json: (await res.json()) as { status: Array<{ period: string; spent_micros: number; used_pct: number | null }> } };
}

const costNotices = async (scopeId: string) =>
  (await alertNotices(sys.redis, sys.namespace)).filter((x): x is { streamId: string; alert: CostAlert } => x.alert.kind === 'cost' && x.alert.scope_id === scopeId);

/** Both the ledger and alerting have handled everything published so far. */
const settled = () => waitFor(async () => (await groupDrained(sys.redis, sys.bus.stream, 'cost-ledger')) && (await groupDrained(sys.redis, sys.bus.stream, 'alerting')), 20_000);
const sweep = () => Promise.all([a.sweeper.tick(), b.sweeper.tick()]);

/** The top contributors the entries themselves give, summed here from the ledger's entries. */
async function contributorsFromEntries(scope: { user: string } | { project: string }, omit: 'user' | 'project'): Promise<CostAlert['top_contributors']> {
  const { entries } = await reader.entries({ scope, limit: 1_000 });
  const sums = new Map<string, number>();
  for (const e of entries) {
    for (const f of [`model:${e.provider}/${e.model}`, `service:${e.service}`, `user:${e.user_id}`, `project:${e.project_id}`]) sums.set(f, (sums.get(f) ?? 0) + e.amount_micros);
  }
  return ['model', 'service', 'user', 'project']
    .filter((d) => d !== omit)
    .flatMap((dimension) =>
      [...sums]
        .filter(([f, v]) => f.startsWith(`${dimension}:`) && v > 0)
        .map(([f, micros]) => ({ dimension, key: f.slice(dimension.length + 1), micros }))
        .sort((x, y) => y.micros - x.micros || x.key.localeCompare(y.key))
        .slice(0, 3),
    );
}

test('a budget set after the spend crossed 80% fires from the ledger at once, exactly once, with the ledger\'s exact top contributors', async () => {
  const calls: Call[] = [
    { user: 'ann', project: 'atlas', model: 'gpt-4o-mini', tokens: 40_000 },
    { user: 'ann', project: 'atlas', model: 'gpt-4o-mini', tokens: 30_000 },
    { user: 'bo', project: 'atlas', model: 'deepseek-chat', tokens: 20_000 },
    { user: 'bo', project: 'atlas', model: 'gemini-2.0-flash', tokens: 90_000 },
    { user: 'cy', project: 'atlas', model: 'gpt-4o-mini', tokens: 5_000 },
    { user: 'dee', project: 'atlas', model: 'gemini-image' },
    { user: 'eli', project: 'atlas', model: 'deepseek-chat', tokens: 1_000 },
  ];
  await sys.bus.publishMany(calls.map((c) => usage(c)));
  expect(await waitFor(async () => (await reader.count({ project: 'atlas' })) === calls.length)).toBe(true);
  expect(await settled()).toBe(true);
  // No budget yet: alerting kept nothing for the project or its users.
  expect(await keysMatching(sys.redis, `${sys.namespace}:budget:*:project:atlas:*`)).toEqual([]);
  expect(await keysMatching(sys.redis, `${sys.namespace}:budget:*:user:*`)).toEqual([]);

  const spent = calls.reduce((s, c) => s + costOf(c), 0);
  const day = await reader.summary({ period: 'day', at: new Date(), scope: { project: 'atlas' } });
  expect(day.total.micros).toBe(spent);
  const limit = Math.floor((spent * 100) / 85); // 85% used: 50% and 80% crossed, 100% not
  expect([reachedPct(spent, limit, 80), reachedPct(spent, limit, 100)]).toEqual([true, false]);

  const put = await putBudget('project', 'atlas', limit);
  expect(put.status).toBe(201);
  // The budget's status starts from the ledger, not from zero.
  expect(put.json.status[0]).toMatchObject({ period: 'day', spent_micros: spent, used_pct: 85 });
  // The re-evaluation of the new budget fires what is already crossed: the highest, once.
  expect(await waitFor(async () => (await costNotices('atlas')).length > 0)).toBe(true);
  await sweep();
  const [fired, ...rest] = await costNotices('atlas');
  expect(rest).toEqual([]);
  expect(fired!.alert).toMatchObject({ state: 'firing', threshold_pct: 80, inhibited_pct: [50], spent_micros: spent, limit_micros: limit });
  // Contributors: the ledger's aggregates of the project's day, to the micro-dollar, by model,
  // service and user (the top three of each); the same figures as summing the entries.
  const expected = await contributorsFromEntries({ project: 'atlas' }, 'project');
  expect(fired!.alert.top_contributors).toEqual(expected);
  expect(expected.filter((c) => c.dimension === 'user').map((c) => c.key)).toEqual(['dee', 'ann', 'bo']);
  const fields = await reader.fields('day', day.period_key, { project: 'atlas' });
  for (const c of fired!.alert.top_contributors) expect([c.dimension, c.key, fields.get(`${c.dimension}:${c.key}`)]).toEqual([c.dimension, c.key, c.micros]);

  // Everything again: the cost events replayed on both instances, the same budget written again.
  for (const x of [a, b]) await x.bus.replay({ types: 'cost.recorded', limit: 1_000 }, (e) => (e.type === 'cost.recorded' ? x.costs.onCostRecorded(e) : undefined));
  expect((await putBudget('project', 'atlas', limit)).status).toBe(200);
  await sweep();
  await sweep();
  expect((await costNotices('atlas')).map((x) => [x.alert.state, x.alert.threshold_pct])).toEqual([['firing', 80]]);
});

test('a budget set at 60% fires 50% from the ledger; the next call fires 80%; each exactly once, however often delivered', async () => {
  const first: Call[] = [
    { user: 'fay', project: 'borealis', model: 'gpt-4o-mini', tokens: 30_000 },
    { user: 'gil', project: 'borealis', model: 'gpt-4o-mini', tokens: 30_000 },
    { user: 'fay', project: 'borealis', model: 'deepseek-chat', tokens: 30_000 },
    { user: 'hal', project: 'borealis', model: 'gpt-4o-mini', tokens: 30_000 },
  ];
  const firstEvents = first.map((c) => usage(c));
  await sys.bus.publishMany(firstEvents);
  expect(await waitFor(async () => (await reader.count({ project: 'borealis' })) === first.length)).toBe(true);
  expect(await settled()).toBe(true);
  const before = first.reduce((s, c) => s + costOf(c), 0);
  const limit = Math.floor((before * 100) / 60);
  expect((await putBudget('project', 'borealis', limit)).status).toBe(201);
  expect(await waitFor(async () => (await costNotices('borealis')).length > 0)).toBe(true);
  await sweep();
  expect((await costNotices('borealis')).map((x) => [x.alert.threshold_pct, x.alert.inhibited_pct, x.alert.spent_micros])).toEqual([[50, [], before]]);

  // One more call takes the project from 60% to 90%: tracked now, so its own event fires 80%.
  const crossing: Call = { user: 'gil', project: 'borealis', model: 'gpt-4o-mini', tokens: 60_000 };
  const after = before + costOf(crossing);
  expect([reachedPct(after, limit, 80), reachedPct(after, limit, 100)]).toEqual([true, false]);
  const crossingEvent = usage(crossing);
  await sys.bus.publishMany([crossingEvent]);
  expect(await waitFor(async () => (await costNotices('borealis')).length === 2)).toBe(true);
  // Redelivered usage (the ledger dedupes it and publishes its cost again) and replayed costs.
  await sys.bus.publishMany([...firstEvents, crossingEvent]);
  expect(await settled()).toBe(true);
  for (const x of [a, b]) await x.bus.replay({ types: 'cost.recorded', limit: 1_000 }, (e) => (e.type === 'cost.recorded' ? x.costs.onCostRecorded(e) : undefined));
  await sweep();
  const notices = await costNotices('borealis');
  expect(notices.map((x) => [x.alert.state, x.alert.threshold_pct])).toEqual([
    ['firing', 50],
    ['firing', 80],
  ]);
  expect(notices[1]!.alert).toMatchObject({ spent_micros: after, correlation_id: `req-${crossingEvent.meta.id}` });
  expect(notices[1]!.alert.top_contributors).toEqual(await contributorsFromEntries({ project: 'borealis' }, 'project'));
  expect(await reader.count({ project: 'borealis' })).toBe(5);
});

test('a user\'s alert names the projects the user spent in, from the ledger, to the micro-dollar', async () => {
  // Only the last call (an image, dearer than the rest together) can take the user to 100%.
  const calls: Call[] = [
    { user: 'ivy', project: 'kite', model: 'gpt-4o-mini', tokens: 20_000 },
    { user: 'ivy', project: 'lark', model: 'deepseek-chat', tokens: 10_000 },
    { user: 'ivy', project: 'moth', model: 'gpt-4o-mini', tokens: 2_000 },
    { user: 'ivy', project: 'newt', model: 'gpt-4o-mini', tokens: 1_000 },
    { user: 'ivy', project: 'lark', model: 'gemini-image' },
  ];
  const total = calls.reduce((s, c) => s + costOf(c), 0);
  expect((await putBudget('user', 'ivy', total)).status).toBe(201);
  await sweep();
  // One at a time through the ledger, so the running totals grow in this order.
  for (const [i, c] of calls.entries()) {
    await sys.bus.publishMany([usage(c)]);
    expect(await waitFor(async () => (await reader.count({ user: 'ivy' })) === i + 1)).toBe(true);
  }
  expect(await waitFor(async () => (await costNotices('ivy')).length > 0)).toBe(true);
  expect(await settled()).toBe(true);
  const notices = await costNotices('ivy');
  expect(notices.map((x) => [x.alert.threshold_pct, x.alert.inhibited_pct, x.alert.spent_micros])).toEqual([[100, [50, 80], total]]);
  const top = notices[0]!.alert.top_contributors;
  expect(top).toEqual(await contributorsFromEntries({ user: 'ivy' }, 'user'));
  expect(top.filter((c) => c.dimension === 'project').map((c) => [c.key, c.micros])).toEqual([
    ['lark', costOf(calls[1]!) + costOf(calls[4]!)],
    ['kite', costOf(calls[0]!)],
    ['moth', costOf(calls[2]!)],
  ]);
});
