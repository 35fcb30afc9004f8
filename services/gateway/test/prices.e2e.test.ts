import { LedgerReader } from '@tollgate/shared';
import { type Replicas, startReplicas } from './replicas-harness';

// Price versions written through the admin API reach every gateway and ledger before they apply.

const LEAD_MS = 800;

describe('the price API', () => {
  let sys: Replicas;
  let user: string;
  const call = async (method: string, path: string, token: string, body?: unknown, gw = 0) => {
    const res = await fetch(`${sys.gateways[gw]!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : {} };
  };

  beforeAll(async () => {
    sys = await startReplicas('prices-api', { chatWorkers: 0, visionWorkers: 0, priceLeadMs: LEAD_MS, pricePollMs: 100 });
    user = (await sys.keys.create({ name: 'p', user_id: 'price-user', project_id: 'price-proj', scopes: ['usage', 'costs'] })).key;
  });
  afterAll(async () => sys?.close());

  test('a new external operation and a price change, each from its effective date, on both gateways and the ledger', async () => {
    const seed = await call('GET', '/v1/prices', user);
    expect(seed.status).toBe(200);
    expect(seed.body.in_force).toBe('2026-01-01');
    expect(seed.body.versions[0]).toMatchObject({ version: '2026-01-01', source: 'seed' });

    // Too soon: services could not all have it before it applies.
    expect((await call('PUT', '/v1/prices/too-soon', sys.adminToken, { effective_from: new Date().toISOString(), models: { 'acme/geocode': { per_call: 1 } } })).status).toBe(400);
    expect((await call('PUT', '/v1/prices/2026-01-01', sys.adminToken, { effective_from: new Date(Date.now() + 5_000).toISOString(), models: {} })).status).toBe(409);
    expect((await call('PUT', '/v1/prices/x', user, { effective_from: new Date(Date.now() + 5_000).toISOString(), models: {} })).status).toBe(403);
    expect((await call('PUT', '/v1/prices/bad', sys.adminToken, { effective_from: new Date(Date.now() + 5_000).toISOString(), models: { 'acme/geocode': { per_call: -1 } } })).status).toBe(400);

    const from = new Date(Date.now() + LEAD_MS + 1_500);
    const put = await call('PUT', '/v1/prices/ext-1', sys.adminToken, {
      effective_from: from.toISOString(),
      extends: '2026-01-01',
      models: { 'acme/geocode': { per_call: 1_500, per_1k_units: 2_000 }, 'google/custom-search': { per_1k_units: 4_000_000 } },
    });
    expect(put.status).toBe(201);
    // Complete: the seed's prices are in it, so the version id alone reproduces an amount.
    expect(put.body.models['openai/gpt-4o']).toBeDefined();
    expect(put.body.models['google/places-text-search']).toEqual({ per_call: 32_000 });

    // Not yet in force anywhere: the operation is unknown, the old search price holds.
    expect((await call('POST', '/v1/usage/holds', user, { operation: 'acme/geocode', units: 10 }, 1)).body.error.code).toBe('unknown_operation');
    // The other gateway has it within its re-read interval, well before it applies.
    let seen = await call('GET', '/v1/prices/ext-1', user, undefined, 1);
    for (let i = 0; i < 50 && seen.status === 404; i++) {
      await new Promise((r) => setTimeout(r, 20));
      seen = await call('GET', '/v1/prices/ext-1', user, undefined, 1);
    }
    expect(seen.body.source).toBe('api');

    await new Promise((r) => setTimeout(r, from.getTime() - Date.now() + 50));
    expect((await call('GET', '/v1/prices', user, undefined, 1)).body.in_force).toBe('ext-1');
    const hold = await call('POST', '/v1/usage/holds', user, { operation: 'acme/geocode', units: 1_000 }, 1);
    expect(hold.status).toBe(201);
    expect(hold.body).toMatchObject({ worst_micros: 1_500 + 2_000, price_version: 'ext-1' });
    const ops = await call('GET', '/v1/usage/operations', user, undefined, 0);
    expect(ops.body.operations).toContainEqual({ operation: 'acme/geocode', per_call_micros: 1_500, per_1k_units_micros: 2_000 });
    expect((await call('POST', '/v1/usage', user, { operation: 'acme/geocode', units: 500, hold_id: hold.body.hold_id })).status).toBe(202);
    expect((await call('POST', '/v1/usage', user, { operation: 'google/custom-search', units: 10 })).body.cost).toEqual({ micros: 40_000, usd: '0.040000', price_version: 'ext-1' });

    const reader = new LedgerReader(sys.redis, sys.namespace);
    let entries: Awaited<ReturnType<LedgerReader['entries']>>['entries'] = [];
    for (let i = 0; i < 200 && entries.length < 2; i++) {
      entries = (await reader.entries({ scope: { project: 'price-proj' }, limit: 10 })).entries;
      if (entries.length < 2) await new Promise((r) => setTimeout(r, 20));
    }
    expect(entries.map((e) => [e.operation, e.amount_micros, e.price_version]).sort()).toEqual([
      ['acme/geocode', 2_500, 'ext-1'],
      ['google/custom-search', 40_000, 'ext-1'],
    ]);

    // In force now: it stays, since entries name it.
    expect((await call('DELETE', '/v1/prices/ext-1', sys.adminToken)).status).toBe(409);
    const later = await call('PUT', '/v1/prices/ext-2', sys.adminToken, { effective_from: new Date(Date.now() + 60_000).toISOString(), extends: 'ext-1', models: {} });
    expect(later.status).toBe(201);
    expect((await call('DELETE', '/v1/prices/ext-2', sys.adminToken)).status).toBe(204);
    expect((await call('GET', '/v1/prices/ext-2', user)).status).toBe(404);
  });
});
