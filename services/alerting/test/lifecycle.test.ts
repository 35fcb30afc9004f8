import { BudgetStore, EventBus, type OpsAlert } from '@tollgate/shared';
import { testRedis, waitFor } from '@tollgate/shared/src/testing';
import { alertNotices, costData, groupDrained, startTestAlerting, TEST_SETTINGS, type TestAlerting } from './helpers';

const { redis, prefix: ns, cleanup } = testRedis('alerting-lifecycle');
const ledger = new EventBus({ redis, prefix: ns, service: 'cost-ledger' });
const workflow = new EventBus({ redis, prefix: ns, service: 'chat-workflow' });
// A clock the test moves: 15 January 2030, noon UTC.
let clock = Date.parse('2030-01-15T12:00:00.000Z');
let alerting: TestAlerting;

beforeAll(async () => {
  alerting = await startTestAlerting(ns, {
    now: () => clock,
    autoSweep: false,
    settings: { ...TEST_SETTINGS, circuitOpenSeconds: 30, errorRateThreshold: 5 },
  });
});
afterAll(async () => {
  await alerting.close();
  await cleanup();
});

const drained = () => waitFor(() => groupDrained(redis, ledger.stream, 'alerting'));

test('a period rollover resolves the firing alerts of the period that ended, once', async () => {
  await new BudgetStore(redis, ns).put('project', 'roll', { periods: [{ period: 'day', limit_micros: 1_000 }] }, clock);
  const at = new Date(clock).toISOString();
  await ledger.publish('cost.recorded', costData({ entryId: 'r1', amount: 600, at: clock, totals: [{ scope: 'project', scope_id: 'roll', spent: 600 }] }), {
    correlation_id: 'r1',
    occurred_at: at,
  });
  expect(await drained()).toBe(true);
  await alerting.sweeper.tick();
  let notices = (await alertNotices(redis, ns)).filter((n) => n.alert.kind === 'cost');
  expect(notices.map((n) => [n.alert.state, n.alert.kind === 'cost' && n.alert.period_key])).toEqual([['firing', '2030-01-15']]);

  clock = Date.parse('2030-01-16T00:00:00.500Z');
  // A late entry for the ended day changes nothing.
  await ledger.publish('cost.recorded', costData({ entryId: 'r2', amount: 500, at: Date.parse(at), totals: [{ scope: 'project', scope_id: 'roll', spent: 1_100 }] }), {
    correlation_id: 'r2',
  });
  expect(await drained()).toBe(true);
  await Promise.all([alerting.sweeper.tick(), alerting.sweeper.tick()]);
  await alerting.sweeper.tick();
  notices = (await alertNotices(redis, ns)).filter((n) => n.alert.kind === 'cost');
  expect(notices.map((n) => [n.alert.state, n.alert.kind === 'cost' && n.alert.resolve_reason])).toEqual([
    ['firing', undefined],
    ['resolved', 'period_rollover'],
  ]);
  expect(notices[1]!.alert.alert_id).toBe(notices[0]!.alert.alert_id);
  expect(await alerting.log.firing()).toEqual([]);
});

test('a circuit open longer than the limit raises one ops alert; closing it resolves it', async () => {
  const data = { breaker: 'gemini:chat', provider: 'gemini', operation: 'chat', failures: 5, reason: 'provider_unavailable' };
  await workflow.publish('circuit.opened', data, { correlation_id: 'breaker:gemini:chat', occurred_at: new Date(clock).toISOString() });
  expect(await drained()).toBe(true);
  clock += 29_000;
  await alerting.sweeper.tick();
  const ops = async () => (await alertNotices(redis, ns)).map((n) => n.alert).filter((a): a is OpsAlert => a.kind === 'ops' && a.alert === 'circuit_open');
  expect(await ops()).toEqual([]);
  clock += 2_000;
  await alerting.sweeper.tick();
  await alerting.sweeper.tick();
  expect((await ops()).map((a) => [a.state, a.value, a.labels.breaker, a.strategy])).toEqual([['firing', 31, 'gemini:chat', 'escalate']]);

  await workflow.publish('circuit.closed', { ...data, reason: 'probe succeeded' }, { correlation_id: 'breaker:gemini:chat', occurred_at: new Date(clock).toISOString() });
  expect(await drained()).toBe(true);
  await alerting.sweeper.tick();
  expect((await ops()).map((a) => [a.state, a.resolve_reason])).toEqual([
    ['firing', undefined],
    ['resolved', 'circuit_closed'],
  ]);
});

test('an error rate above the level raises one ops alert per crossing and resolves when it falls', async () => {
  const error = { service: 'chat-workflow', category: 'timeout' as const, strategy: 'retry_with_backoff' as const, code: 'provider_timeout', message: 'slow' };
  const publishErrors = (n: number) =>
    workflow.publishMany(Array.from({ length: n }, () => ({ type: 'error.occurred' as const, data: error, meta: { correlation_id: 'x', occurred_at: new Date(clock).toISOString() } })));
  await publishErrors(4);
  expect(await drained()).toBe(true);
  const rate = async () => (await alertNotices(redis, ns)).map((n) => n.alert).filter((a): a is OpsAlert => a.kind === 'ops' && a.alert === 'error_rate');
  expect(await rate()).toEqual([]);
  await publishErrors(10);
  expect(await drained()).toBe(true);
  expect((await rate()).map((a) => [a.state, a.labels])).toEqual([['firing', { service: 'chat-workflow', category: 'timeout' }]]);
  // Still high: nothing new.
  await alerting.sweeper.tick();
  expect((await rate()).length).toBe(1);
  clock += 61_000;
  await alerting.sweeper.tick();
  expect((await rate()).map((a) => [a.state, a.resolve_reason])).toEqual([
    ['firing', undefined],
    ['resolved', 'rate_recovered'],
  ]);
});
