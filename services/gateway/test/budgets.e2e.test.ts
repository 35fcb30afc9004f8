import { BudgetStore, EventBus } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { publishCost, sleep, startTestAlerting, type TestAlerting } from '@tollgate/alerting/test/helpers';
import { ADMIN_TOKEN, post, startSystem, type System } from './harness';

let sys: System;
let alerting: TestAlerting;
let ledger: EventBus;

beforeAll(async () => {
  sys = await startSystem('gw-budgets');
  alerting = await startTestAlerting(sys.namespace);
  ledger = new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'cost-ledger' });
});
afterAll(async () => {
  await alerting.close();
  await sys.close();
});

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = admin) {
  const res = await fetch(`${sys.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : undefined) as Record<string, any> };
}

test('the budget API refuses bad amounts, unknown scopes and non-admin keys', async () => {
  const put = (path: string, body: unknown, headers?: Record<string, string>) => call('PUT', path, body, headers);
  const day = (limit: unknown, extra: Record<string, unknown> = {}) => ({ periods: [{ period: 'day', limit_micros: limit, ...extra }] });

  for (const [body, path] of [
    [day(-5), 'periods.0.limit_micros'],
    [day(1.5), 'periods.0.limit_micros'],
    [day('100'), 'periods.0.limit_micros'],
    [day(0), 'periods.0.limit_micros'],
    [day(1_000, { mode: 'strict' }), 'periods.0.mode'],
    [day(1_000, { thresholds_pct: [0] }), 'periods.0.thresholds_pct.0'],
    [{ periods: [{ period: 'year', limit_micros: 1 }] }, 'periods.0.period'],
    [{ periods: [{ period: 'day', limit_micros: 1 }, { period: 'day', limit_micros: 2 }] }, 'periods'],
    [{ periods: [] }, 'periods'],
  ] as const) {
    const res = await put('/v1/budgets/project/web', body);
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe('validation_failed');
    expect(res.json.error.issues.map((i: { path: string }) => i.path)).toContain(path);
  }
  const unknownScope = await put('/v1/budgets/team/web', day(1_000));
  expect(unknownScope.status).toBe(400);
  expect(unknownScope.json.error.issues[0].path).toBe('scope');
  expect((await put('/v1/budgets/global/everyone', day(1_000))).status).toBe(400);
  expect((await put('/v1/budgets/user/bad%20id', day(1_000))).status).toBe(400);

  const user = { authorization: `Bearer ${sys.apiKey}` };
  const forbidden = await put('/v1/budgets/project/web', day(1_000), user);
  expect(forbidden.status).toBe(403);
  expect(forbidden.json.error.code).toBe('forbidden');
  expect((await call('GET', '/v1/budgets', undefined, user)).status).toBe(403);
  expect((await call('DELETE', '/v1/budgets/project/web', undefined, user)).status).toBe(403);
  expect((await call('GET', '/v1/budgets', undefined, {})).status).toBe(401);
  expect(await new BudgetStore(sys.redis, sys.namespace).get('project', 'web')).toBeNull();

  // And the good ones.
  const created = await put('/v1/budgets/project/web', day(2_500_000, { mode: 'hard' }));
  expect(created.status).toBe(201);
  expect(created.json.budget).toMatchObject({
    scope: 'project',
    scope_id: 'web',
    periods: [{ period: 'day', limit_micros: 2_500_000, mode: 'hard', thresholds_pct: [50, 80, 100] }],
  });
  const replaced = await put('/v1/budgets/project/web', { periods: [{ period: 'month', limit_micros: 9_000_000, thresholds_pct: [90, 25, 90] }] });
  expect(replaced.status).toBe(200);
  expect(replaced.json.budget.periods).toEqual([{ period: 'month', limit_micros: 9_000_000, mode: 'soft', thresholds_pct: [25, 90] }]);
  expect(replaced.json.budget.revision).toBe(created.json.budget.revision + 1);
  const got = await call('GET', '/v1/budgets/project/web');
  expect(got.json.status.find((s: { period: string }) => s.period === 'month')).toMatchObject({ limit_micros: 9_000_000, spent_micros: 0, used_pct: 0, blocked: false });
  const list = await call('GET', '/v1/budgets');
  expect(list.json.budgets.map((b: { scope_id: string }) => b.scope_id)).toEqual(['web']);
  expect(list.json.global_defaults).toEqual([]); // the test alerting runs without global defaults
  expect((await call('DELETE', '/v1/budgets/project/web')).status).toBe(204);
  expect((await call('DELETE', '/v1/budgets/project/web')).status).toBe(404);
  expect((await call('GET', '/v1/budgets/project/web')).status).toBe(404);
});

test('a hard budget at 100% refuses the next chat with 402 and bills nothing; raising it lets requests through', async () => {
  const user = { authorization: `Bearer ${sys.apiKey}` }; // user-1 / proj-1
  expect((await call('PUT', '/v1/budgets/project/proj-1', { periods: [{ period: 'day', limit_micros: 1_000, mode: 'hard' }] })).status).toBe(201);
  // What the ledger publishes for a call that used the whole budget.
  await publishCost(ledger, { entryId: 'spend-1', amount: 1_000, totals: [{ scope: 'project', scope_id: 'proj-1', spent: 1_000 }] });
  expect(await waitFor(async () => (await call('GET', '/v1/budgets/project/proj-1')).json.status[0].blocked === true)).toBe(true);

  const jobsBefore = await sys.queue.count();
  const refused = await post(sys, '/v1/chat', { message: 'Hello?' }, { ...user, 'x-request-id': 'refused-1' });
  expect(refused.status).toBe(402);
  expect(refused.json.error).toEqual({
    code: 'budget_exceeded',
    category: 'budget_exceeded',
    message: 'The spending budget has been reached, so paid requests are paused until it resets or is raised.',
    suggested_actions: ['Wait for the budget period to reset', 'Ask an administrator to raise the budget'],
    request_id: 'refused-1',
    // Which budget, and why this request does not fit: its worst case exceeds what is left.
    budget: { scope: 'project', scope_id: 'proj-1', period: 'day', spent_micros: 0, held_micros: 0, limit_micros: 1_000, request_worst_case_micros: expect.any(Number) },
  });
  const compat = await post(sys, '/v1/chat/completions', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hi' }] }, { ...user, 'x-request-id': 'refused-2' });
  expect(compat.status).toBe(402);
  expect(compat.json.error.code).toBe('budget_exceeded');
  // Nothing was enqueued or called, so nothing can be billed.
  await sleep(200);
  expect(await sys.queue.count()).toBe(jobsBefore);
  for (const id of ['refused-1', 'refused-2']) expect(await sys.bus.history({ filter: { correlation_id: id } })).toEqual([]);
  expect(sys.stub.stats().totals.requests).toBe(0);

  const raised = await call('PUT', '/v1/budgets/project/proj-1', { periods: [{ period: 'day', limit_micros: 1_000_000, mode: 'hard' }] });
  expect(raised.status).toBe(200);
  expect(raised.json.status[0]).toMatchObject({ blocked: false, spent_micros: 1_000, used_pct: 0 });
  const allowed = await post(sys, '/v1/chat', { message: 'Hello again' }, { ...user, 'x-request-id': 'allowed-1' });
  expect(allowed.status).toBe(200);
  const usage = await sys.bus.history({ types: 'usage.recorded', filter: { correlation_id: 'allowed-1' } });
  expect(usage.length).toBe(1);

  // The 100% alert fired once and resolved when the budget was raised.
  expect(
    await waitFor(async () => (await call('GET', '/v1/alerts?scope=project&scope_id=proj-1&state=resolved')).json.alerts.length === 1),
  ).toBe(true);
  const history = (await call('GET', '/v1/alerts?scope=project&scope_id=proj-1')).json.alerts as Array<Record<string, unknown>>;
  expect(history.map((a) => [a.threshold_pct, a.state, a.resolve_reason, a.hard])).toEqual([[100, 'resolved', 'budget_raised', true]]);
});
