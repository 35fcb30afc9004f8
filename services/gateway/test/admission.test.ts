import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { ApiKeyStore, BudgetStore, finishHold, heldMicros, holdKeys, ledgerKeys, periodKeys } from '@tollgate/shared';
import { testRedis } from '@tollgate/shared/src/testing';
import { admission, type Estimator } from '../src/auth/admission';
import { ApiError, errorHandler } from '../src/errors';

const { redis, prefix, cleanup } = testRedis('admission');
const keys = new ApiKeyStore(redis, prefix);
const budgets = new BudgetStore(redis, prefix);
const WORST = 1_000;
const ADMIN = 'operator-token-of-the-admission-test';
const refusals: unknown[] = [];
let server: Server;
let base: string;

beforeAll(async () => {
  const app = express();
  const opts = { redis, namespace: prefix, keys, adminToken: ADMIN, perMinute: 3 };
  const echo: express.RequestHandler = (_req, res) => void res.json(res.locals.principal);
  // A fixed worst case; a body with "invalid" fails validation, as a route's estimator would.
  const estimate: Estimator = (req) => {
    if ((req.body as { invalid?: boolean } | undefined)?.invalid) throw new ApiError('invalid_request', 'invalid body');
    return { input_tokens: 0, bounds: [{ input_per_mtok: 0, fixed_micros: WORST }] };
  };
  app.use(express.json());
  app.post('/paid', admission(opts, 'chat', { budget: estimate }), echo);
  // The budget tests send more than the rate limit above allows.
  app.post('/wide', admission({ ...opts, perMinute: 1_000_000 }, 'chat', { budget: estimate }), echo);
  app.get('/free', admission(opts, 'costs', { budget: false }), echo);
  // What the admission refused with, before the handler turns it into the client's error body.
  app.use(((err, _req, _res, next) => {
    refusals.push(err);
    next(err);
  }) as express.ErrorRequestHandler);
  app.use(errorHandler);
  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  await cleanup();
});

const call = async (path: string, key: string, body?: unknown) => {
  const res = await fetch(`${base}${path}`, {
    method: path === '/free' ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { error?: Record<string, unknown> }, headers: res.headers };
};


test('a valid key is admitted with its principal and counted against its rate limit', async () => {
  const { key, record } = await keys.create({ name: 'a', user_id: 'ann', project_id: 'apollo', scopes: ['chat'] });
  const first = await call('/paid', key);
  expect(first.status).toBe(200);
  expect(first.body).toEqual({ key_id: record.key_id, name: 'a', user_id: 'ann', project_id: 'apollo', scopes: ['chat'], operator: false });
  expect(first.headers.get('x-ratelimit-remaining')).toBe('2');
  expect((await call('/paid', key)).status).toBe(200);
  expect((await call('/paid', key)).headers.get('x-ratelimit-remaining')).toBe('0');
  const limited = await call('/paid', key);
  expect(limited.status).toBe(429);
  expect(limited.body.error).toMatchObject({ code: 'rate_limited' });
  expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
});

test('unknown, malformed and revoked keys are refused; a key without the scope is forbidden and not counted', async () => {
  expect((await call('/paid', 'tg_not-a-key')).body.error).toMatchObject({ code: 'unauthorized' });
  expect((await call('/paid', 'sk-something-else')).status).toBe(401);
  const { key, record } = await keys.create({ name: 'b', user_id: 'bob', project_id: 'p', scopes: ['costs'] });
  const forbidden = await call('/paid', key);
  expect(forbidden.status).toBe(403);
  expect(forbidden.body.error).toMatchObject({ code: 'forbidden' });
  expect(await redis.get(`${prefix}:rl:${record.key_id}`)).toBeNull();
  expect((await call('/free', key)).status).toBe(200);
  await keys.revoke(record.key_id);
  expect((await call('/free', key)).status).toBe(401);
});

test('paid work is refused by the first hard budget it does not fit: user, then project, then global', async () => {
  const { key } = await keys.create({ name: 'c', user_id: 'cat', project_id: 'circus', scopes: ['chat', 'costs'] });
  const other = await keys.create({ name: 'd', user_id: 'dan', project_id: 'delta', scopes: ['chat'] });
  const refusedWith = async (k: string) => {
    const res = await call('/wide', k);
    expect(res.status).toBe(402);
    expect(res.body.error).toMatchObject({ code: 'budget_exceeded' });
    const err = refusals.at(-1) as { scope: string; scopeId: string; period: string; details?: unknown };
    return { scope: err.scope, id: err.scopeId, period: err.period, details: err.details, body: res.body.error };
  };
  const p = periodKeys(Date.now());
  const ledger = ledgerKeys(prefix);
  try {
    await budgets.put('global', 'global', { periods: [{ period: 'month', limit_micros: 8_000, mode: 'hard' }] });
    await redis.hset(ledger.running('month', p.month), 'total', 9_000);
    const global = await refusedWith(key);
    expect(global).toMatchObject({ scope: 'global', id: 'global', period: 'month', details: { spent_micros: 9_000, held_micros: 0, limit_micros: 8_000, request_worst_case_micros: WORST } });
    // The global scope's figures are every tenant's together: the client is told only which budget.
    expect(global.body?.budget).toEqual({ scope: 'global', scope_id: 'global', period: 'month' });
    // 5,500 spent of 6,000 leaves less than this request's worst case.
    await budgets.put('project', 'circus', { periods: [{ period: 'week', limit_micros: 6_000, mode: 'hard' }] });
    await redis.hset(ledger.running('week', p.week), 'project:circus', 5_500);
    expect((await refusedWith(key)).body?.budget).toEqual({ scope: 'project', scope_id: 'circus', period: 'week', spent_micros: 5_500, held_micros: 0, limit_micros: 6_000, request_worst_case_micros: WORST });
    await budgets.put('user', 'dan', { periods: [{ period: 'day', limit_micros: 4_000, mode: 'hard' }] });
    await redis.hset(ledger.day(p.day), 'user:dan', 3_500);
    expect(await refusedWith(other.key)).toMatchObject({ scope: 'user', id: 'dan', period: 'day' });
    // A soft budget never refuses, and only paid work is checked against budgets.
    await budgets.remove('global', 'global');
    await budgets.put('user', 'dan', { periods: [{ period: 'day', limit_micros: 4_000, mode: 'soft' }] });
    expect((await call('/wide', other.key)).status).toBe(200);
    expect((await call('/free', key)).status).toBe(200);
  } finally {
    await budgets.remove('global', 'global');
    await budgets.remove('project', 'circus');
    await budgets.remove('user', 'dan');
  }
});

test('each admitted request holds its worst case until it ends; what is held counts against the limit', async () => {
  const { key } = await keys.create({ name: 'h', user_id: 'hal', project_id: 'hold', scopes: ['chat'] });
  await budgets.put('project', 'hold', { periods: [{ period: 'day', limit_micros: 3 * WORST + 10, mode: 'hard' }] });
  for (let i = 0; i < 3; i++) {
    const ok = await call('/wide', key);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-tollgate-budget-hold-micros')).toBe(String(WORST));
  }
  const refused = await call('/wide', key);
  expect(refused.status).toBe(402);
  expect(refused.body.error?.budget).toMatchObject({ held_micros: 3 * WORST, spent_micros: 0 });
  expect((await heldMicros(redis, prefix, 'project', 'hold', periodKeys(Date.now()))).day).toBe(3 * WORST);
  // Each ended run gives its hold back (nothing billed): the budget has room again.
  const holds = await redis.zrangebyscore(holdKeys(prefix).expiry, '-inf', '+inf');
  expect(holds).toHaveLength(3);
  for (const id of holds) await finishHold(redis, prefix, String(id), 0);
  expect((await heldMicros(redis, prefix, 'project', 'hold', periodKeys(Date.now()))).day).toBe(0);
  expect((await call('/wide', key)).status).toBe(200);
});

test('an invalid body is reported only after the key checks pass', async () => {
  expect((await call('/wide', 'tg_not-a-key', { invalid: true })).status).toBe(401);
  const { key } = await keys.create({ name: 'i', user_id: 'ivy', project_id: 'ink', scopes: ['chat'] });
  const res = await call('/wide', key, { invalid: true });
  expect(res.status).toBe(400);
  expect(res.body.error).toMatchObject({ code: 'invalid_request' });
});

test('the operator token is admitted as the operator, under the same checks', async () => {
  const res = await call('/paid', ADMIN);
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ key_id: 'admin-token', user_id: 'operator', operator: true });
});
