import type { Command } from 'ioredis';
import { alertingKeys, BudgetStore, type CostAlert, EventBus, periodKeys } from '@tollgate/shared';
import { keysMatching, testRedis, waitFor } from '@tollgate/shared/src/testing';
import { BudgetIndex, FULL_RELOAD_MS } from '../src/budget-index';
import { alertNotices, costData, groupDrained, publishCost, startTestAlerting, type TestAlerting } from './helpers';

const { redis, prefix: ns, cleanup } = testRedis('alerting-budget-index');
const keys = alertingKeys(ns);
const budgets = new BudgetStore(redis, ns);
const ledger = new EventBus({ redis, prefix: ns, service: 'cost-ledger' });
let a: TestAlerting;
let b: TestAlerting;
/** Every command the two alerting instances sent on their main connections, as strings. */
const sent: string[][] = [];

/** Records what one instance sends: a scope's id in a command means alerting worked on that scope. */
function record(instance: TestAlerting): void {
  const original = instance.redis.sendCommand.bind(instance.redis);
  instance.redis.sendCommand = ((command: Command, ...rest: unknown[]) => {
    sent.push([command.name, ...command.args.map((x) => String(x))]);
    return (original as (c: Command, ...r: unknown[]) => unknown)(command, ...rest);
  }) as typeof instance.redis.sendCommand;
}
const naming = (id: string) => sent.filter((c) => c.some((arg) => arg.includes(id)));

beforeAll(async () => {
  // No global defaults (the helpers' NO_DEFAULTS): with no budget anywhere nothing is tracked.
  // The sweeps run when the test says, so only the events can tell an instance of a new budget.
  [a, b] = await Promise.all([startTestAlerting(ns, { autoSweep: false }), startTestAlerting(ns, { autoSweep: false })]);
  record(a);
  record(b);
});
afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
  await cleanup();
});

const costNotices = async (scopeId: string) =>
  (await alertNotices(redis, ns)).filter((n): n is { streamId: string; alert: CostAlert } => n.alert.kind === 'cost' && n.alert.scope_id === scopeId);
const drained = () => waitFor(() => groupDrained(redis, ledger.stream, 'alerting'));

/** One cost event of the project and user, with the running totals the ledger would report. */
const spend = (entryId: string, project: string, user: string, spent: number) =>
  costData({
    entryId,
    amount: 1_000,
    totals: (['day', 'week', 'month'] as const).flatMap((period) => [
      { scope: 'global' as const, scope_id: 'all', period, spent },
      { scope: 'user' as const, scope_id: user, period, spent },
      { scope: 'project' as const, scope_id: project, period, spent },
    ]),
  });

test('a project, user and global scope without a budget cost alerting no Redis command and leave no key', async () => {
  const events = Array.from({ length: 200 }, (_, i) => ({
    type: 'cost.recorded' as const,
    data: spend(`q${i}`, 'quiet-proj', 'quiet-user', (i + 1) * 1_000),
    meta: { correlation_id: `req-q${i}` },
  }));
  const handled = new Set<string>();
  const off = [a, b].map((x) => x.bus.subscribe('cost.recorded', (e) => void handled.add(e.id)));
  await ledger.publishMany(events);
  expect(await drained()).toBe(true);
  off.forEach((u) => u());
  expect(handled.size).toBe(200);

  // No spend, window or block key (only the defaults the instances published), nor a per-entry
  // marker, for any of the scopes.
  expect(await keysMatching(redis, `${ns}:budget:*`)).toEqual([keys.budgetDefaults]);
  expect(await keysMatching(redis, `${ns}:alert:*`)).toEqual([]);
  // And not one command named them: each event cost at most a read of the index version.
  expect(naming('quiet-proj')).toEqual([]);
  expect(naming('quiet-user')).toEqual([]);
  expect(naming(':budget:spent:global:')).toEqual([]);
  expect(await costNotices('quiet-proj')).toEqual([]);
});

test('a budget set later is tracked from the next event on, by whichever instance gets it; removed, it is no longer tracked', async () => {
  await budgets.put('project', 'late-proj', { periods: [{ period: 'day', limit_micros: 10_000 }] });
  // Both instances may still hold the index without it: the version read with the event tells them.
  // One event at a time, so the crossings come in this order (two at once could be taken in either
  // order, and 0 -> 8,500 is one jump that fires 80% with 50% inhibited).
  for (const [i, spent] of [4_000, 5_000, 6_000, 8_500].entries()) {
    await ledger.publishMany([{ type: 'cost.recorded' as const, data: spend(`l${i}`, 'late-proj', 'late-user', spent), meta: { correlation_id: `req-l${i}` } }]);
    expect(await drained()).toBe(true);
  }
  expect((await costNotices('late-proj')).map((n) => [n.alert.threshold_pct, n.alert.spent_micros, n.alert.correlation_id])).toEqual([
    [50, 5_000, 'req-l1'],
    [80, 8_500, 'req-l3'],
  ]);
  const day = periodKeys(Date.now()).day;
  expect(await redis.get(keys.spent('project', 'late-proj', 'day', day))).toBe('8500');
  expect(naming('late-proj').length).toBeGreaterThan(0);
  // The user of the same events has no budget: still nothing for it.
  expect(await keysMatching(redis, `${ns}:budget:*:user:late-user:*`)).toEqual([]);
  expect(naming('late-user')).toEqual([]);

  expect(await budgets.remove('project', 'late-proj')).toBe(true);
  // A sweep resolves its alerts (budget removed); from then on its events are skipped again.
  await Promise.all([a.sweeper.tick(), b.sweeper.tick()]);
  expect((await costNotices('late-proj')).map((n) => [n.alert.state, n.alert.threshold_pct, n.alert.resolve_reason]).slice(2).sort()).toEqual([
    ['resolved', 50, 'budget_removed'],
    ['resolved', 80, 'budget_removed'],
  ]);
  expect(await redis.scard(keys.budgetDirty)).toBe(0);
  const before = sent.length;
  await publishCost(ledger, { entryId: 'l9', amount: 500, totals: [{ scope: 'project', scope_id: 'late-proj', spent: 9_000 }] });
  expect(await drained()).toBe(true);
  expect(sent.slice(before).filter((c) => c.some((arg) => arg.includes('late-proj')))).toEqual([]);
  expect(await redis.get(keys.spent('project', 'late-proj', 'day', day))).toBe('8500');
});

test('the index copy follows the version both ways, and a sweep reloads it anyway once a minute', async () => {
  const own = alertingKeys(`${ns}:copy`);
  let now = 1_000_000;
  const index = new BudgetIndex(redis, own, false, () => now);
  await redis.set(own.budgetIndexVersion, '7');
  await index.reload();
  expect([index.view().version, index.view().has('user', 'olga')]).toEqual(['7', false]);
  // Written by a build that does not bump the version: unseen until the minute is up.
  await redis.sadd(own.budgetIndex, 'user:olga');
  await index.refresh();
  expect(index.view().has('user', 'olga')).toBe(false);
  now += FULL_RELOAD_MS;
  await index.refresh();
  expect(index.view().has('user', 'olga')).toBe(true);
  // A version that went back (Redis restored from an older copy) is a change too.
  await redis.set(own.budgetIndexVersion, '2');
  await redis.sadd(own.budgetIndex, 'project:pia');
  const seen = await index.readVersion();
  expect(index.view().isAt(seen)).toBe(false);
  expect((await index.catchUp(seen)).has('project', 'pia')).toBe(true);
  expect(index.view().version).toBe('2');
});
