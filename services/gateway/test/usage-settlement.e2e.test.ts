import { BudgetStore, heldMicros, keyspace, LedgerReader, ledgerKeys, periodKeys } from '@tollgate/shared';
import { keysMatching } from '@tollgate/shared/src/testing';
import { reportFingerprint } from '../src/usage-holds';
import { type Replicas, startReplicas } from './replicas-harness';

// The edges of settling an external call: a price change while it is held, a key reused after its
// slot expired, a report whose gateway died half-way, and amounts beyond any budget.

const PLACES = 32_000; // google/places-text-search, per call, in the seed version (the first test raises it)
const QUERY = 5_000; // google/custom-search: $5 per 1,000 queries, which no test here changes

function client(sys: Replicas, key: string) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${sys.gateways[0]!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, any>, headers: res.headers };
  };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('settling external calls', () => {
  let sys: Replicas;
  let n = 0;
  const tenant = async (limit?: number) => {
    const project = `settle-proj-${++n}`;
    if (limit !== undefined) await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: limit, mode: 'hard' }] });
    const { key } = await sys.keys.create({ name: `s${n}`, user_id: `settle-user-${n}`, project_id: project, scopes: ['usage'] });
    return { project, api: client(sys, key) };
  };
  const admin = (method: string, path: string, body?: unknown) => client(sys, sys.adminToken)(method, path, body);
  const entries = async (project: string) => (await new LedgerReader(sys.redis, sys.namespace).entries({ scope: { project }, limit: 100 })).entries;
  const spent = async (project: string) => Number((await sys.redis.hget(ledgerKeys(sys.namespace).day(periodKeys(Date.now()).day), `project:${project}`)) ?? 0);
  const held = async (project: string) => (await heldMicros(sys.redis, sys.namespace, 'project', project, periodKeys(Date.now()))).day;
  const settledEntries = async (project: string, count: number) => {
    // Until that many are in the running totals too (the ledger writes an entry, then adds it to the totals).
    const reader = new LedgerReader(sys.redis, sys.namespace);
    for (let i = 0; i < 250 && (await reader.appliedCount({ project })) < count; i++) await sleep(20);
    return entries(project);
  };

  beforeAll(async () => {
    sys = await startReplicas('usage-settle', { chatWorkers: 0, visionWorkers: 0, priceLeadMs: 1_000, pricePollMs: 100 });
  });
  afterAll(async () => sys?.close());

  test('a price version taking effect while a call is held does not make its report dearer than the hold', async () => {
    const { project, api } = await tenant(100_000);
    const effective = new Date(Date.now() + 1_500).toISOString();
    expect((await admin('PUT', '/v1/prices/settle-up', { effective_from: effective, extends: '2026-01-01', models: { 'google/places-text-search': { per_call: 320_000 } } })).status).toBe(201);
    const hold = await api('POST', '/v1/usage/holds', { operation: 'google/places-text-search', units: 0, calls: 3 });
    expect(hold.status).toBe(201);
    expect(hold.body).toMatchObject({ worst_micros: 3 * PLACES, price_version: '2026-01-01' });
    await sleep(2_000); // the dearer version is now in force
    const report = await api('POST', '/v1/usage', { operation: 'google/places-text-search', units: 0, calls: 3, hold_id: hold.body.hold_id });
    expect(report.status).toBe(202);
    expect(report.body.cost).toMatchObject({ micros: 3 * PLACES, price_version: '2026-01-01' });
    const [entry] = await settledEntries(project, 1);
    expect(entry).toMatchObject({ amount_micros: 3 * PLACES, price_version: '2026-01-01' });
    expect(await spent(project)).toBe(3 * PLACES);
    expect(await spent(project)).toBeLessThanOrEqual(100_000);
    // A call reported without a hold is priced now, at the new version.
    const unheld = await api('POST', '/v1/usage', { operation: 'google/places-text-search', units: 0, calls: 1 });
    expect(unheld.body.cost).toMatchObject({ micros: 320_000, price_version: 'settle-up' });
  });

  test('an Idempotency-Key used again after its slot expired records a new call', async () => {
    const { project, api } = await tenant();
    const first = await api('POST', '/v1/usage', { operation: 'google/custom-search', units: 1 }, { 'idempotency-key': 'reuse-1' });
    expect(first.status).toBe(202);
    await settledEntries(project, 1);
    // What the slot's 24 h expiry does:
    const k = keyspace(sys.namespace);
    for (const slot of await keysMatching(sys.redis, `${k('usage-report', 'idem')}:*`)) await sys.redis.del(slot);
    const second = await api('POST', '/v1/usage', { operation: 'google/custom-search', units: 5 }, { 'idempotency-key': 'reuse-1' });
    expect(second.status).toBe(202);
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    expect(second.body.usage_event_id).not.toBe(first.body.usage_event_id);
    const all = await settledEntries(project, 2);
    expect(all.map((e) => e.amount_micros).sort((a, b) => a - b)).toEqual([QUERY, 5 * QUERY]);
    expect(await spent(project)).toBe(6 * QUERY);
  });

  test('a report whose gateway died after claiming it is refused while fresh, then taken over and counted once', async () => {
    const { project, api } = await tenant(1_000_000);
    const hold = await api('POST', '/v1/usage/holds', { operation: 'google/custom-search', units: 2 });
    const slot = keyspace(sys.namespace)('usage-report', 'hold', hold.body.hold_id);
    const report = { operation: 'google/custom-search', units: 2, calls: 1, hold_id: hold.body.hold_id as string };
    const left = { state: 'pending', fingerprint: reportFingerprint(report), nonce: 'crashed-gateway', at: Date.now() };
    await sys.redis.set(slot, JSON.stringify(left), 'PX', 3_600_000);
    const fresh = await api('POST', '/v1/usage', report);
    expect(fresh.status).toBe(409);
    expect(fresh.body.error.code).toBe('conflict');
    // 31 s later (what PENDING_STALE_MS waits for), a retry takes it over with the same nonce.
    await sys.redis.set(slot, JSON.stringify({ ...left, at: Date.now() - 31_000 }), 'PX', 3_600_000);
    const retried = await api('POST', '/v1/usage', report);
    expect(retried.status).toBe(202);
    const again = await api('POST', '/v1/usage', report);
    expect(again.status).toBe(202);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    const [entry, ...more] = await settledEntries(project, 1);
    expect(more).toEqual([]);
    expect(entry).toMatchObject({ amount_micros: 2 * QUERY });
    for (let i = 0; i < 100 && (await held(project)) > 0; i++) await sleep(20);
    expect(await held(project)).toBe(0);
    // A release after the settlement is refused: nothing is given back twice.
    expect((await api('DELETE', `/v1/usage/holds/${hold.body.hold_id}`)).status).toBe(409);
  });

  test('a report too large to price is a 400 with a code, like the hold', async () => {
    const { project, api } = await tenant();
    expect((await admin('PUT', '/v1/prices/settle-pricey', { effective_from: new Date(Date.now() + 1_100).toISOString(), extends: 'settle-up', models: { 'acme/pricey': { per_unit: 10_000_000 } } })).status).toBe(201);
    await sleep(1_500);
    const hold = await api('POST', '/v1/usage/holds', { operation: 'acme/pricey', units: 1_000_000_000 });
    expect(hold.status).toBe(400);
    const report = await api('POST', '/v1/usage', { operation: 'acme/pricey', units: 1_000_000_000 });
    expect(report.status).toBe(400);
    expect(report.body.error.code).toBe('invalid_request');
    await sleep(200);
    expect(await entries(project)).toEqual([]);
  });
});
