import { BudgetStore, heldMicros, type LedgerEntry, LedgerReader, ledgerKeys, periodKeys } from '@tollgate/shared';
import { type Replicas, startReplicas } from './replicas-harness';

// Metered external APIs: a caller holds an operation's worst case on its hard budgets, then
// reports what the call used; the ledger prices and settles the report exactly once.

const PLACES = 32_000; // google/places-text-search, per call
const SEARCH_PER_1K = 5_000_000; // google/custom-search, per 1,000 queries

interface Api {
  status: number;
  body: Record<string, any>;
  headers: Headers;
}

function client(sys: Replicas, key: string, gw = 0) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Api> => {
    const res = await fetch(`${sys.gateways[gw]!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
  };
}

const day = () => periodKeys(Date.now()).day;
const spentOf = async (sys: Replicas, project: string) => Number((await sys.redis.hget(ledgerKeys(sys.namespace).day(day()), `project:${project}`)) ?? 0);
// Entries in the running totals too (the ledger writes an entry, then adds it to the totals).
const entriesOf = (sys: Replicas, project: string) => new LedgerReader(sys.redis, sys.namespace).appliedCount({ project });
const heldOf = async (sys: Replicas, project: string) => (await heldMicros(sys.redis, sys.namespace, 'project', project, periodKeys(Date.now()))).day;

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function projectEntries(sys: Replicas, project: string): Promise<LedgerEntry[]> {
  return (await new LedgerReader(sys.redis, sys.namespace).entries({ scope: { project }, limit: 1000 })).entries;
}

describe('external usage holds', () => {
  let sys: Replicas;
  let n = 0;
  const tenant = async (limit: number | undefined, scopes: Array<'usage' | 'chat'> = ['usage']) => {
    const project = `usage-proj-${++n}`;
    if (limit !== undefined) await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: limit, mode: 'hard' }] });
    const { key } = await sys.keys.create({ name: `k${n}`, user_id: `usage-user-${n}`, project_id: project, scopes });
    return { project, api: client(sys, key), api2: client(sys, key, 1) };
  };

  beforeAll(async () => {
    sys = await startReplicas('usage-holds', { chatWorkers: 0, visionWorkers: 0 });
  });
  afterAll(async () => sys?.close());

  test('a hold that does not fit a hard budget is refused with 402 and records nothing', async () => {
    const { project, api } = await tenant(100_000);
    const refused = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0, calls: 4 });
    expect(refused.status).toBe(402);
    expect(refused.body.error.code).toBe('budget_exceeded');
    expect(refused.body.error.budget).toEqual({
      scope: 'project', scope_id: project, period: 'day', spent_micros: 0, held_micros: 0, limit_micros: 100_000, request_worst_case_micros: 4 * PLACES,
    });
    expect(await heldOf(sys, project)).toBe(0);
    // The bus is ordered per project's ledger: once a later report is in, the refusal left nothing.
    const ok = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ worst_micros: PLACES, held: true, operation: 'google/places-text-search' });
    expect(await heldOf(sys, project)).toBe(PLACES);
    expect((await api('POST', '/v1/usage', { operation: 'google/places-text-search', units: 3, hold_id: ok.body.hold_id })).status).toBe(202);
    await until(async () => (await entriesOf(sys, project)) >= 1, 'the ledger entry');
    const entries = await projectEntries(sys, project);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      amount_micros: PLACES, provider: 'google', model: 'places-text-search', service: 'external', operation: 'google/places-text-search',
      units: { calls: 1, quantity: 3 }, usage_source: 'reported', price_version: '2026-01-01',
    });
    // Reports and summaries group it like any other call: by service, operation, provider, model.
    const summary = await new LedgerReader(sys.redis, sys.namespace).summary({ period: 'day', at: new Date(), groupBy: 'service', scope: { project } });
    expect(summary.groups).toEqual([expect.objectContaining({ key: 'external', micros: PLACES })]);
    const byOp = await new LedgerReader(sys.redis, sys.namespace).summary({ period: 'month', at: new Date(), groupBy: 'operation', scope: { project } });
    expect(byOp.groups).toEqual([expect.objectContaining({ key: 'google/places-text-search', micros: PLACES })]);
    await until(async () => (await heldOf(sys, project)) === 0, 'the hold to settle');
  });

  test('a settled hold is priced once, however often its report is sent', async () => {
    const { project, api, api2 } = await tenant(1_000_000);
    const hold = await api('POST', '/v1/usage/holds', { operation: 'google/custom-search', units: 200 });
    expect(hold.status).toBe(201);
    expect(hold.body.worst_micros).toBe((200 * SEARCH_PER_1K) / 1000);
    const report = { operation: 'google/custom-search', units: 150, hold_id: hold.body.hold_id };
    // Three times with one Idempotency-Key, over both gateways, then the same hold id without a key and with another key.
    const sent = [
      await api('POST', '/v1/usage', report, { 'idempotency-key': 'search-1' }),
      await api2('POST', '/v1/usage', report, { 'idempotency-key': 'search-1' }),
      await api('POST', '/v1/usage', report, { 'idempotency-key': 'search-1' }),
      await api2('POST', '/v1/usage', report),
      await api('POST', '/v1/usage', report, { 'idempotency-key': 'search-other' }),
    ];
    expect(sent.map((s) => s.status)).toEqual([202, 202, 202, 202, 202]);
    expect(sent[0]!.headers.get('idempotent-replayed')).toBeNull();
    expect(sent.slice(1).map((s) => s.headers.get('idempotent-replayed'))).toEqual(['true', 'true', 'true', 'true']);
    expect(new Set(sent.map((s) => s.body.usage_event_id)).size).toBe(1);
    expect(sent[0]!.body.cost).toEqual({ micros: 750_000, usd: '0.750000', price_version: '2026-01-01' });
    // The same hold with different figures is a conflict, not a second bill.
    const other = await api('POST', '/v1/usage', { ...report, units: 151 });
    expect(other.status).toBe(409);

    // Without a hold: the key alone makes a retried report count once.
    const plain = { operation: 'youtube/search', units: 100 };
    const yt = await Promise.all([1, 2, 3].map(() => api('POST', '/v1/usage', plain, { 'idempotency-key': 'yt-1' })));
    expect(yt.filter((r) => r.status === 202).length).toBeGreaterThanOrEqual(1);
    // A concurrent retry may be told the first is still in flight; once that is done it replays.
    const again = await api('POST', '/v1/usage', plain, { 'idempotency-key': 'yt-1' });
    expect(again.status).toBe(202);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect((await api('POST', '/v1/usage', { ...plain, units: 101 }, { 'idempotency-key': 'yt-1' })).status).toBe(409);

    await until(async () => (await entriesOf(sys, project)) >= 2, 'two ledger entries');
    await new Promise((r) => setTimeout(r, 200)); // a duplicate would land by now
    const entries = await projectEntries(sys, project);
    expect(entries.map((e) => [e.operation, e.amount_micros, e.units]).sort()).toEqual([
      ['google/custom-search', 750_000, { calls: 1, quantity: 150 }],
      ['youtube/search', 0, { calls: 1, quantity: 100 }],
    ]);
    expect(await spentOf(sys, project)).toBe(750_000);
    await until(async () => (await heldOf(sys, project)) === 0, 'the rest of the hold to be given back');
  });

  test('an expired hold frees its budget; a released one at once', async () => {
    const { project, api } = await tenant(40_000);
    const first = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0, ttl_seconds: 1 });
    expect(first.status).toBe(201);
    expect(Date.parse(first.body.expires_at) - Date.now()).toBeLessThanOrEqual(1_000);
    expect((await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 })).status).toBe(402);
    await new Promise((r) => setTimeout(r, 1_100));
    // Admission sweeps expired holds before it judges, so the budget is free again.
    const second = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 });
    expect(second.status).toBe(201);
    expect(await heldOf(sys, project)).toBe(PLACES);

    expect((await api('DELETE', `/v1/usage/holds/${second.body.hold_id}`)).status).toBe(204);
    expect(await heldOf(sys, project)).toBe(0);
    expect((await api('DELETE', `/v1/usage/holds/${second.body.hold_id}`)).status).toBe(204);
    // A released hold settles nothing: its report is refused so the caller reports without it.
    expect((await api('POST', '/v1/usage', { operation: 'google/places-text-search', units: 0, hold_id: second.body.hold_id })).status).toBe(409);
    // And a reported hold cannot be released.
    const third = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 });
    expect((await api('POST', '/v1/usage', { operation: 'google/places-text-search', units: 0, hold_id: third.body.hold_id })).status).toBe(202);
    expect((await api('DELETE', `/v1/usage/holds/${third.body.hold_id}`)).status).toBe(409);
    await until(async () => (await spentOf(sys, project)) === PLACES && (await heldOf(sys, project)) === 0, 'the report to settle');
  });

  test('an unknown operation is a 400 naming it, for holds and reports', async () => {
    const { project, api } = await tenant(undefined);
    for (const path of ['/v1/usage', '/v1/usage/holds']) {
      const res = await api('POST', path, { operation: 'acme/teleport', units: 1 });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('unknown_operation');
      expect(res.body.error.message).toContain('"acme/teleport"');
      // A chat model is not an external operation.
      const model = await api('POST', path, { operation: 'openai/gpt-4o', units: 1 });
      expect(model.status).toBe(400);
      expect(model.body.error.message).toContain('"openai/gpt-4o"');
    }
    expect((await api('POST', '/v1/usage', { operation: 'google/custom-search', units: -1 })).body.error.code).toBe('validation_failed');
    // Soft budgets only: the hold reserves nothing but still names the call.
    const hold = await api('POST', '/v1/usage/holds', { operation: 'google/custom-search', units: 10 });
    expect(hold.body).toMatchObject({ held: false, worst_micros: 50_000 });
    expect(await heldOf(sys, project)).toBe(0);
  });

  test("another tenant's hold is 403; an unknown one 404; a key without the usage scope 403", async () => {
    const a = await tenant(500_000);
    const b = await tenant(500_000);
    const hold = await a.api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 });
    const report = { operation: 'google/places-text-search', units: 0, hold_id: hold.body.hold_id };
    expect((await b.api('POST', '/v1/usage', report)).status).toBe(403);
    expect((await b.api('DELETE', `/v1/usage/holds/${hold.body.hold_id}`)).status).toBe(403);
    // Same project, another user: still not theirs.
    const { key } = await sys.keys.create({ name: 'same-proj', user_id: 'someone-else', project_id: a.project, scopes: ['usage'] });
    expect((await client(sys, key)('POST', '/v1/usage', report)).status).toBe(403);
    expect((await a.api('DELETE', '/v1/usage/holds/00000000-0000-4000-8000-000000000000')).status).toBe(404);
    expect(await heldOf(sys, a.project)).toBe(PLACES);
    expect(await entriesOf(sys, b.project)).toBe(0);
    const chatOnly = await tenant(undefined, ['chat']);
    expect((await chatOnly.api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 })).status).toBe(403);
    expect((await a.api('DELETE', `/v1/usage/holds/${hold.body.hold_id}`)).status).toBe(204);
  });
});

describe('external holds under concurrency', () => {
  let sys: Replicas;
  beforeAll(async () => {
    sys = await startReplicas('usage-load', { chatWorkers: 0, visionWorkers: 0 });
  });
  afterAll(async () => sys?.close());

  test('100 concurrent clients on two gateways never take the project past its hard limit, and use it up', async () => {
    const LIMIT = 500_000;
    const project = 'usage-load-proj';
    await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: LIMIT, mode: 'hard' }] });
    const keys = await Promise.all([0, 1, 2, 3].map(async (i) => (await sys.keys.create({ name: `l${i}`, user_id: `load-user-${i}`, project_id: project, scopes: ['usage'] })).key));
    let reported = 0;
    let expected = 0;
    let refused = 0;

    const run = async (c: number, i: number) => {
      const api = client(sys, keys[c % 4]!, c % 2);
      const search = (c + i) % 2 === 0;
      const op = search ? 'google/custom-search' : 'google/places-text-search';
      const worstUnits = search ? 4 : 0; // up to $0.02 of searches, or one $0.032 place search
      const hold = await api('POST', '/v1/usage/holds', { operation: op, units: worstUnits });
      if (hold.status === 402) {
        refused++;
        const b = hold.body.error.budget;
        expect(b.spent_micros + b.held_micros + b.request_worst_case_micros).toBeGreaterThan(LIMIT);
        return;
      }
      expect(hold.status).toBe(201);
      // The external call would run here; one in five fails and gives its hold back.
      if ((c * 7 + i) % 5 === 0) {
        expect((await api('DELETE', `/v1/usage/holds/${hold.body.hold_id}`)).status).toBe(204);
        return;
      }
      const used = search ? 1 + ((c * 31 + i * 17) % worstUnits) : 5;
      const res = await api('POST', '/v1/usage', { operation: op, units: used, hold_id: hold.body.hold_id }, { 'idempotency-key': `r-${c}-${i}` });
      expect(res.status).toBe(202);
      reported++;
      expected += res.body.cost.micros;
    };
    await Promise.all(Array.from({ length: 100 }, async (_, c) => {
      for (let i = 0; i < 5; i++) await run(c, i);
    }));
    expect(refused).toBeGreaterThan(0);
    expect(reported).toBeGreaterThan(0);
    if (process.env.USAGE_LOAD_LOG) console.log({ reported, refused, expected });

    // Then one client alone until the budget refuses with nothing else held.
    const api = client(sys, keys[0]!);
    let last: Api | undefined;
    for (let i = 0; i < 200; i++) {
      await until(async () => (await heldOf(sys, project)) === 0, 'holds to settle');
      last = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0 });
      if (last.status === 402) break;
      const res = await api('POST', '/v1/usage', { operation: 'google/places-text-search', units: 1, hold_id: last.body.hold_id });
      reported++;
      expected += res.body.cost.micros;
    }
    expect(last?.status).toBe(402);
    expect(last!.body.error.budget.held_micros).toBe(0);

    await until(async () => (await entriesOf(sys, project)) >= reported, 'every report in the ledger');
    const spent = await spentOf(sys, project);
    expect(await entriesOf(sys, project)).toBe(reported);
    expect(spent).toBe(expected);
    expect(spent).toBeLessThanOrEqual(LIMIT);
    expect(spent).toBeGreaterThan(LIMIT - PLACES);
    expect(await heldOf(sys, project)).toBe(0);
    if (process.env.USAGE_LOAD_LOG) console.log({ reported, spent, limit: LIMIT });
  }, 60_000);
});
