import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { alertingKeys, ApiKeyStore, type BudgetPeriod, type BudgetScope } from '@tollgate/shared';
import { testRedis } from '@tollgate/shared/src/testing';
import { admission } from '../src/auth/admission';
import { errorHandler } from '../src/errors';

const { redis, prefix, cleanup } = testRedis('admission');
const keys = new ApiKeyStore(redis, prefix);
const ADMIN = 'operator-token-of-the-admission-test';
const refusals: unknown[] = [];
let server: Server;
let base: string;

beforeAll(async () => {
  const app = express();
  const opts = { redis, namespace: prefix, keys, adminToken: ADMIN, perMinute: 3 };
  const echo: express.RequestHandler = (_req, res) => void res.json(res.locals.principal);
  app.post('/paid', admission(opts, 'chat', { budget: true }), echo);
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

const call = async (path: string, key: string) => {
  const res = await fetch(`${base}${path}`, { method: path === '/paid' ? 'POST' : 'GET', headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { error?: Record<string, unknown> }, headers: res.headers };
};

const block = (scope: BudgetScope, id: string, period: BudgetPeriod, spent: number, limit: number) =>
  redis.set(alertingKeys(prefix).block(scope, id, period), JSON.stringify({ spent_micros: spent, limit_micros: limit }));

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

test('paid work is refused by the first used-up hard budget: user, then project, then global', async () => {
  const { key } = await keys.create({ name: 'c', user_id: 'cat', project_id: 'circus', scopes: ['chat', 'costs'] });
  const other = await keys.create({ name: 'd', user_id: 'dan', project_id: 'delta', scopes: ['chat'] });
  const refusedWith = async (k: string) => {
    const res = await call('/paid', k);
    expect(res.status).toBe(402);
    expect(res.body.error).toMatchObject({ code: 'budget_exceeded' });
    const err = refusals.at(-1) as { scope: string; scopeId: string; period: string; details?: unknown };
    return { scope: err.scope, id: err.scopeId, period: err.period, details: err.details };
  };
  try {
    await block('global', 'global', 'month', 9_000, 8_000);
    expect(await refusedWith(key)).toEqual({ scope: 'global', id: 'global', period: 'month', details: { spent_micros: 9_000, limit_micros: 8_000 } });
    await block('project', 'circus', 'week', 7_000, 6_000);
    expect(await refusedWith(key)).toMatchObject({ scope: 'project', id: 'circus', period: 'week' });
    await block('user', 'dan', 'day', 5_000, 4_000);
    expect(await refusedWith(other.key)).toMatchObject({ scope: 'user', id: 'dan', period: 'day' });
    // Only paid work is checked against budgets.
    expect((await call('/free', key)).status).toBe(200);
  } finally {
    const k = alertingKeys(prefix);
    await redis.del(k.block('global', 'global', 'month'), k.block('project', 'circus', 'week'), k.block('user', 'dan', 'day'));
  }
});

test('the operator token is admitted as the operator, under the same checks', async () => {
  const res = await call('/paid', ADMIN);
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ key_id: 'admin-token', user_id: 'operator', operator: true });
});
