import {
  alertingKeys,
  BudgetStore,
  type CostAlert,
  createEvent,
  EventBus,
  type EventData,
  findBudgetBlock,
  ledgerKeysOf,
  periodBounds,
  periodKeys,
} from '@tollgate/shared';
import { keysMatching, testRedis, waitFor } from '@tollgate/shared/src/testing';
import { alertNotices, costData, groupDrained, publishCost, startTestAlerting, type TestAlerting } from './helpers';

const { redis, prefix: ns, cleanup } = testRedis('alerting-thresholds');
const keys = alertingKeys(ns);
const budgets = new BudgetStore(redis, ns);
const ledger = new EventBus({ redis, prefix: ns, service: 'cost-ledger' });
let a: TestAlerting;
let b: TestAlerting;

beforeAll(async () => {
  [a, b] = await Promise.all([startTestAlerting(ns), startTestAlerting(ns)]);
});
afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
  await cleanup();
});

const costNotices = async (scopeId: string) =>
  (await alertNotices(redis, ns)).filter((n): n is { streamId: string; alert: CostAlert } => n.alert.kind === 'cost' && n.alert.scope_id === scopeId);

test('two instances, 2,000 cost events through 50/80/100%, some delivered twice: exactly three alerts, in order', async () => {
  // 1,000 micros an event against a 1.9 $ budget: 50% at entry 950, 80% at 1,520, 100% at 1,900.
  await budgets.put('project', 'web', { periods: [{ period: 'day', limit_micros: 1_900_000 }] });
  // What the ledger holds for the project's day once it wrote these entries: where an alert's top
  // contributors come from (no ledger runs here, so its aggregates are written up front).
  const day = periodKeys(Date.now()).day;
  const byUser: Record<string, number> = {};
  for (let i = 1; i <= 2_000; i++) byUser[`user:u${i % 7}`] = (byUser[`user:u${i % 7}`] ?? 0) + 1_000;
  await redis.hset(ledgerKeysOf(ns, 'web').day(day, { project: 'web' }), {
    total: 2_000_000,
    count: 2_000,
    'model:openai/gpt-4o-mini': 2_000_000,
    'service:chat-workflow': 2_000_000,
    'operation:chat': 2_000_000,
    ...byUser,
  });
  const events: Array<{ type: 'cost.recorded'; data: EventData<'cost.recorded'>; meta: { correlation_id: string } }> = [];
  for (let i = 1; i <= 2_000; i++) {
    const item = {
      type: 'cost.recorded' as const,
      data: costData({
        entryId: `e${i}`,
        amount: 1_000,
        totals: [
          { scope: 'project', scope_id: 'web', spent: i * 1_000 },
          { scope: 'user', scope_id: `u${i % 7}`, spent: Math.ceil(i / 7) * 1_000 },
          { scope: 'global', scope_id: 'all', spent: i * 1_000 },
        ],
      }),
      meta: { correlation_id: `req-${i}` },
    };
    events.push(item);
    // A ledger that published twice (a retry after a lost ack): same entry, new envelope.
    if (i % 10 === 0) events.push(item);
  }
  const handled = { a: new Set<string>(), b: new Set<string>() };
  const unsubscribe = [
    a.bus.subscribe('cost.recorded', (e) => void handled.a.add(e.id)),
    b.bus.subscribe('cost.recorded', (e) => void handled.b.add(e.id)),
  ];
  for (let i = 0; i < events.length; i += 200) await ledger.publishMany(events.slice(i, i + 200));

  expect(await waitFor(() => groupDrained(redis, ledger.stream, 'alerting'), 20_000)).toBe(true);
  unsubscribe.forEach((u) => u());
  // Both instances did part of the work, and every delivery reached one of them (under load, the
  // short reclaim time in the tests may hand an entry to both: that is the redelivery to survive).
  expect(handled.a.size).toBeGreaterThan(0);
  expect(handled.b.size).toBeGreaterThan(0);
  expect(new Set([...handled.a, ...handled.b]).size).toBe(2_200);
  const notices = await costNotices('web');
  expect(notices.map((n) => [n.alert.state, n.alert.threshold_pct])).toEqual([
    ['firing', 50],
    ['firing', 80],
    ['firing', 100],
  ]);
  expect(new Set(notices.map((n) => n.alert.fingerprint)).size).toBe(3);
  for (const { alert } of notices) {
    expect(alert.spent_micros * 100).toBeGreaterThanOrEqual(alert.threshold_pct * 1_900_000);
    expect(alert.limit_micros).toBe(1_900_000);
    expect(alert.inhibited_pct).toEqual([]);
  }
  // The highest running total, however often and in whatever order the entries were delivered.
  expect(await redis.get(keys.spent('project', 'web', 'day', day))).toBe('2000000');
  // Top contributors are the ledger's figures for the project's day, to the micro-dollar, by
  // model, service and user (ties by name): users 1-5 had 286 entries each, 6 and 0 had 285.
  for (const { alert } of notices) {
    expect(alert.top_contributors).toEqual([
      { dimension: 'model', key: 'openai/gpt-4o-mini', micros: 2_000_000 },
      { dimension: 'service', key: 'chat-workflow', micros: 2_000_000 },
      { dimension: 'user', key: 'u1', micros: 286_000 },
      { dimension: 'user', key: 'u2', micros: 286_000 },
      { dimension: 'user', key: 'u3', micros: 286_000 },
    ]);
  }
  // Alerting keeps no copy of them and no per-entry marker: the window is its handled threshold.
  expect(await redis.hgetall(keys.window('project', 'web', 'day', day))).toEqual({ hi: '100' });
  expect(await keysMatching(redis, `${ns}:alert:seen:*`)).toEqual([]);

  // Everything again, as a replay after a crash would deliver it: nothing new is sent.
  const replayed = await a.bus.replay({ types: 'cost.recorded', limit: 5_000 }, (e) => (e.type === 'cost.recorded' ? a.costs.onCostRecorded(e) : undefined));
  expect(replayed).toBe(2_200);
  expect((await costNotices('web')).length).toBe(3);
  expect(await redis.get(keys.spent('project', 'web', 'day', day))).toBe('2000000');
  expect(await redis.hgetall(keys.window('project', 'web', 'day', day))).toEqual({ hi: '100' });

  // The dispatcher put each notice on the bus once, with ids derived from the alert.
  expect(await waitFor(async () => (await ledger.history({ types: 'cost.threshold_exceeded' })).length >= 3)).toBe(true);
  const published = (await ledger.history({ types: 'cost.threshold_exceeded' })).map((e) => e.event);
  expect(published.map((e) => e.type === 'cost.threshold_exceeded' && e.data.threshold_pct)).toEqual([50, 80, 100]);
  expect(published.map((e) => e.id)).toEqual(notices.map((n) => `alert-${n.alert.alert_id}-firing`));
  expect(published.every((e) => e.project_id === 'web')).toBe(true);
  // The history answers for the project.
  const history = await a.log.firing();
  expect(history.filter((h) => h.kind === 'cost' && h.scope_id === 'web').length).toBe(3);
}, 30_000);

test('a jump across several thresholds fires only the highest; the lower ones are inhibited for good', async () => {
  await budgets.put('user', 'jumpy', { periods: [{ period: 'day', limit_micros: 100_000 }] });
  await publishCost(ledger, { entryId: 'j1', amount: 85_000, totals: [{ scope: 'user', scope_id: 'jumpy', spent: 85_000 }] });
  expect(await waitFor(async () => (await costNotices('jumpy')).length === 1)).toBe(true);
  // An older entry arriving late (lower running total) must not fire the inhibited 50%.
  await publishCost(ledger, { entryId: 'j0', amount: 55_000, totals: [{ scope: 'user', scope_id: 'jumpy', spent: 55_000 }] });
  await publishCost(ledger, { entryId: 'j2', amount: 20_000, totals: [{ scope: 'user', scope_id: 'jumpy', spent: 105_000 }] });
  expect(await waitFor(async () => (await costNotices('jumpy')).length === 2)).toBe(true);
  expect(await waitFor(() => groupDrained(redis, ledger.stream, 'alerting'))).toBe(true);
  const notices = await costNotices('jumpy');
  expect(notices.map((n) => [n.alert.threshold_pct, n.alert.inhibited_pct])).toEqual([
    [80, [50]],
    [100, []],
  ]);
});

test('one bus read decides each window once, at its highest total: one alert naming the request that carried it', async () => {
  await budgets.put('project', 'batchy', { periods: [{ period: 'day', limit_micros: 100_000 }] });
  // Ten entries from 40% to 94%, delivered in one read out of order: 50% and 80% were both
  // crossed inside it, so only 80% fires (50% inhibited), at the read's highest spend.
  const spends = [60_000, 40_000, 94_000, 70_000, 52_000, 88_000, 46_000, 82_000, 76_000, 58_000];
  const events = spends.map((spent, i) =>
    createEvent('cost.recorded', costData({ entryId: `bt${i}`, amount: 6_000, totals: [{ scope: 'project', scope_id: 'batchy', spent }] }), { correlation_id: `req-bt${i}` }, 'cost-ledger'),
  );
  await a.costs.onCostRecordedMany(events);
  const notices = await costNotices('batchy');
  expect(notices.map((n) => [n.alert.threshold_pct, n.alert.inhibited_pct, n.alert.spent_micros, n.alert.correlation_id])).toEqual([[80, [50], 94_000, 'req-bt2']]);
  expect(await redis.get(keys.spent('project', 'batchy', 'day', periodKeys(Date.now()).day))).toBe('94000');
  // The same read again (a redelivery) changes nothing.
  await a.costs.onCostRecordedMany(events);
  expect((await costNotices('batchy')).length).toBe(1);
});

test('a hard budget blocks at 100% until the period ends; raising it lifts the block at once and resolves what it no longer reaches', async () => {
  const now = Date.now();
  const day = periodKeys(now).day;
  await budgets.put('user', 'hardy', { periods: [{ period: 'day', limit_micros: 10_000, mode: 'hard' }] });
  await publishCost(ledger, { entryId: 'h1', amount: 10_000, totals: [{ scope: 'user', scope_id: 'hardy', spent: 10_000 }] });
  expect(await waitFor(async () => (await findBudgetBlock(redis, ns, { user_id: 'hardy', project_id: 'p' })) !== null)).toBe(true);
  expect(await findBudgetBlock(redis, ns, { user_id: 'hardy', project_id: 'p' })).toEqual({
    scope: 'user',
    scope_id: 'hardy',
    period: 'day',
    spent_micros: 10_000,
    limit_micros: 10_000,
  });
  // The block lifts by itself at the period's end.
  expect(await redis.pexpiretime(keys.block('user', 'hardy', 'day'))).toBe(periodBounds('day', day).end.getTime());
  const fired = await costNotices('hardy');
  expect(fired.map((n) => [n.alert.threshold_pct, n.alert.hard, n.alert.inhibited_pct])).toEqual([[100, true, [50, 80]]]);

  // Raised: the PUT itself lifts the block; the sweeper resolves the 100% alert.
  await budgets.put('user', 'hardy', { periods: [{ period: 'day', limit_micros: 40_000, mode: 'hard' }] });
  expect(await findBudgetBlock(redis, ns, { user_id: 'hardy', project_id: 'p' })).toBeNull();
  expect(await waitFor(async () => (await costNotices('hardy')).length === 2)).toBe(true);
  const resolved = (await costNotices('hardy'))[1]!.alert;
  expect(resolved).toMatchObject({ state: 'resolved', threshold_pct: 100, resolve_reason: 'budget_raised', limit_micros: 40_000, spent_micros: 10_000 });
  expect(resolved.alert_id).toBe(fired[0]!.alert.alert_id);

  // A new crossing under the new budget is a new alert.
  await publishCost(ledger, { entryId: 'h2', amount: 11_000, totals: [{ scope: 'user', scope_id: 'hardy', spent: 21_000 }] });
  expect(await waitFor(async () => (await costNotices('hardy')).length === 3)).toBe(true);
  expect((await costNotices('hardy'))[2]!.alert).toMatchObject({ state: 'firing', threshold_pct: 50, spent_micros: 21_000 });

  // Lowered below the spend: blocked by the PUT itself, and the re-evaluation fires 100%.
  await budgets.put('user', 'hardy', { periods: [{ period: 'day', limit_micros: 20_000, mode: 'hard' }] });
  expect(await findBudgetBlock(redis, ns, { user_id: 'hardy', project_id: 'p' })).toMatchObject({ spent_micros: 21_000, limit_micros: 20_000 });
  expect(await waitFor(async () => (await costNotices('hardy')).length === 4)).toBe(true);
  expect((await costNotices('hardy'))[3]!.alert).toMatchObject({ state: 'firing', threshold_pct: 100, inhibited_pct: [80] });

  // Removed: the block goes and every firing alert of the scope resolves.
  expect(await budgets.remove('user', 'hardy')).toBe(true);
  expect(await findBudgetBlock(redis, ns, { user_id: 'hardy', project_id: 'p' })).toBeNull();
  expect(await waitFor(async () => (await costNotices('hardy')).length === 6)).toBe(true);
  const tail = (await costNotices('hardy')).slice(4).map((n) => [n.alert.state, n.alert.threshold_pct, n.alert.resolve_reason]);
  expect(tail.sort()).toEqual([
    ['resolved', 100, 'budget_removed'],
    ['resolved', 50, 'budget_removed'],
  ].sort());
  expect(await redis.smembers(keys.firing)).not.toContain(fired[0]!.alert.fingerprint);
});
