import { createHash } from 'node:crypto';
import { namespaceGlobs } from '@tollgate/shared';
import { png1x1 } from '@tollgate/vision/test/images';
import { keysMatching, waitFor } from '@tollgate/shared/src/testing';
import { type FullSystem, startFullSystem } from './full-harness';
import { errorShapeProblems, httpClient, type RawResponse } from './http-kit';

/**
 * Keys, revocation, tenants and roles over the whole system: API keys exist in Redis only as
 * SHA-256 hashes; a revoked key is refused on every authenticated route at once; a tenant's key
 * never reads another tenant's spend, entries, alerts or conversations through any read
 * endpoint or parameter; admin-only endpoints refuse every other key and write nothing.
 */

let sys: FullSystem;
let client: ReturnType<typeof httpClient>;
const JSON_TYPE = { 'content-type': 'application/json' };
/** Every key this file was ever given, to look for in Redis. */
const issued: string[] = [];
const tenant = {
  alice: { key: '', user: 'alice', project: 'web', requests: [] as string[] },
  bob: { key: '', user: 'bob', project: 'mobile', requests: [] as string[] },
};
let adminKey = '';
const alertIds = { alice: [] as string[], bob: [] as string[] };

const bearer = (k: string) => ({ authorization: `Bearer ${k}` });

async function call(method: string, path: string, key: string, body?: unknown): Promise<RawResponse & { json: any }> {
  const res = await client.send({
    method,
    path,
    headers: { ...bearer(key), ...(body !== undefined && JSON_TYPE) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  let json: unknown;
  try {
    json = JSON.parse(res.text);
  } catch {
    json = undefined;
  }
  return { ...res, json };
}

/**
 * Opens the alert SSE stream and collects `alert` events until `enough` says so (the whole replayed
 * backlog arrives in one batch, written at once) or `ms` pass, then closes it.
 */
async function readAlertStream(key: string, query = '', ms = 700, enough: (ids: string[]) => boolean = () => false): Promise<{ status: number; ids: string[]; alerts: Array<{ alert_id: string; scope: string; scope_id: string }> }> {
  const ctrl = new AbortController();
  const res = await fetch(`${sys.url}/v1/alerts/stream${query}`, { headers: bearer(key), signal: ctrl.signal });
  const alerts: Array<{ alert_id: string; scope: string; scope_id: string }> = [];
  if (res.status !== 200 || !res.body) {
    await res.text();
    return { status: res.status, ids: [], alerts };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const stop = setTimeout(() => ctrl.abort(), ms);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
        const frame = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        if (!/^event: alert$/m.test(frame)) continue;
        const data = frame.split('\n').find((l) => l.startsWith('data: '));
        if (data) alerts.push(JSON.parse(data.slice(6)));
      }
      if (enough(alerts.map((a) => a.alert_id))) ctrl.abort();
    }
  } catch {
    // aborted: the read window is over
  } finally {
    clearTimeout(stop);
  }
  return { status: 200, ids: alerts.map((a) => a.alert_id), alerts };
}

/** An SSE stream kept open: frames as they come, whether it has ended. */
function openStream(path: string, key: string) {
  const ctrl = new AbortController();
  const frames: Array<{ event: string; data: string; at: number }> = [];
  let ended = false;
  let status = 0;
  const done = (async () => {
    const res = await fetch(`${sys.url}${path}`, { headers: bearer(key), signal: ctrl.signal });
    status = res.status;
    if (!res.body) return;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buffer += decoder.decode(value, { stream: true });
      for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
        const frame = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const event = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (event && data) frames.push({ event, data, at: Date.now() });
      }
    }
  })()
    .catch(() => undefined)
    .finally(() => (ended = true));
  return {
    frames,
    get ended() {
      return ended;
    },
    get status() {
      return status;
    },
    async close() {
      ctrl.abort();
      await done;
    },
  };
}

const PNG = { alice: png1x1([1, 2, 3]), bob: png1x1([4, 5, 6]) };

beforeAll(async () => {
  sys = await startFullSystem('security');
  client = httpClient(sys.url);
  const admin = sys.adminToken;
  for (const who of ['alice', 'bob'] as const) {
    const t = tenant[who];
    const res = await call('POST', '/v1/admin/keys', admin, { name: who, user_id: t.user, project_id: t.project, scopes: ['chat', 'vision', 'costs'] });
    expect(res.status).toBe(201);
    t.key = res.json.key;
    issued.push(t.key);
    // A budget of one micro-dollar per user and project: any spend fires an alert for each scope.
    for (const [scope, id] of [['user', t.user], ['project', t.project]] as const) {
      expect((await call('PUT', `/v1/budgets/${scope}/${id}`, admin, { periods: [{ period: 'day', limit_micros: 1 }] })).status).toBe(201);
    }
  }
  const a = await call('POST', '/v1/admin/keys', admin, { name: 'ops', user_id: 'ops', project_id: 'ops', scopes: ['admin'] });
  adminKey = a.json.key;
  issued.push(adminKey);

  // Each tenant spends: a chat in a conversation id both use, a completion, an image.
  for (const who of ['alice', 'bob'] as const) {
    const t = tenant[who];
    const chat = await call('POST', '/v1/chat', t.key, { message: `${who}'s private question`, conversation_id: 'shared-conv' });
    expect(chat.status).toBe(200);
    const completion = await call('POST', '/v1/chat/completions', t.key, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `${who} again` }] });
    expect(completion.status).toBe(200);
    const vision = await call('POST', '/v1/vision', t.key, { image_base64: PNG[who].toString('base64'), prompt: `${who}'s picture` });
    expect(vision.status).toBe(200);
    t.requests.push(chat.json.request_id, completion.json.tollgate.request_id, vision.json.request_id);
  }
  // The ledger has every call and alerting has fired for all four scopes.
  expect(await waitFor(async () => (await sys.reader.entries({ limit: 100 })).entries.length >= 6, 15_000)).toBe(true);
  expect(
    await waitFor(async () => {
      const all = (await call('GET', '/v1/alerts?limit=1000', admin)).json.alerts as Array<{ alert_id: string; scope: string; scope_id: string }>;
      alertIds.alice = all.filter((x) => (x.scope === 'user' && x.scope_id === 'alice') || (x.scope === 'project' && x.scope_id === 'web')).map((x) => x.alert_id);
      alertIds.bob = all.filter((x) => (x.scope === 'user' && x.scope_id === 'bob') || (x.scope === 'project' && x.scope_id === 'mobile')).map((x) => x.alert_id);
      return alertIds.alice.length >= 2 && alertIds.bob.length >= 2;
    }, 15_000, 100),
  ).toBe(true);
}, 60_000);

afterAll(async () => {
  client?.close();
  await sys?.close();
});

// ---------------------------------------------------------------------------------------------

describe('API keys are stored only as hashes', () => {
  test('no key material anywhere in Redis: not in any key name, value, hash, set, list, sorted set or stream', async () => {
    // Keys made in every way this file makes them, including one revoked and one listed.
    const extra = await sys.keys.create({ name: 'direct', user_id: 'direct', project_id: 'p', scopes: ['admin'] });
    issued.push(extra.key);
    const gone = await call('POST', '/v1/admin/keys', sys.adminToken, { name: 'to-revoke', user_id: 'x', project_id: 'p' });
    issued.push(gone.json.key);
    expect((await call('DELETE', `/v1/admin/keys/${gone.json.key_id}`, sys.adminToken)).status).toBe(204);
    const listing = await call('GET', '/v1/admin/keys', adminKey);
    expect(listing.status).toBe(200);
    for (const k of issued) expect(listing.text).not.toContain(k.slice(3));

    const everything = await dumpNamespace();
    const forms = (k: string) => {
      const secret = k.slice(3); // after "tg_"
      return [k, secret, secret.slice(0, 16), secret.slice(-16), Buffer.from(k).toString('hex'), Buffer.from(k).toString('base64'), Buffer.from(secret, 'base64url').toString('hex')];
    };
    const leaks: string[] = [];
    for (const k of issued) for (const f of forms(k)) if (everything.includes(f)) leaks.push(`${k.slice(0, 8)}... as ${f.slice(0, 12)}...`);
    // Nor the operator's token or the providers' keys.
    for (const s of [sys.adminToken, ...Object.values(sys.providerKeys)]) if (everything.includes(s)) leaks.push(`${s.slice(0, 8)}...`);
    expect(leaks).toEqual([]);
    expect(everything.length).toBeGreaterThan(10_000); // the scan saw the system's data, not an empty prefix

    // What is there is the SHA-256 of each live key, pointing at a record without the key.
    for (const k of [tenant.alice.key, tenant.bob.key, adminKey, extra.key]) {
      const record = await sys.redis.get(`${sys.namespace}:apikey:${createHash('sha256').update(k).digest('hex')}`);
      expect(record).not.toBeNull();
      expect(Object.keys(JSON.parse(record!)).sort()).toEqual(['created_at', 'key_id', 'name', 'project_id', 'scopes', 'user_id']);
    }
    // The revoked key's hash is gone too.
    expect(await sys.redis.exists(`${sys.namespace}:apikey:${createHash('sha256').update(gone.json.key).digest('hex')}`)).toBe(0);
  });

  test('what Redis holds cannot be used as a key: the stored hash and the key id are refused', async () => {
    const h = createHash('sha256').update(tenant.alice.key).digest('hex');
    const ids = await sys.redis.smembers(`${sys.namespace}:apikeys`);
    for (const k of [h, `tg_${h}`, ...ids]) {
      const res = await call('GET', '/v1/costs/summary', k);
      expect(res.status).toBe(401);
    }
  });
});

/** Every key and value under the test prefix as one string (streams entry by entry). */
async function dumpNamespace(): Promise<string> {
  const r = sys.redis;
  const parts: string[] = [];
  for (const k of await keysMatching(r, namespaceGlobs(sys.namespace))) {
      parts.push(k);
      const type = await r.type(k);
      if (type === 'string') parts.push((await r.getBuffer(k))?.toString('latin1') ?? '');
      else if (type === 'hash') parts.push(JSON.stringify(await r.hgetall(k)));
      else if (type === 'set') parts.push(JSON.stringify(await r.smembers(k)));
      else if (type === 'zset') parts.push(JSON.stringify(await r.call('ZRANGE', k, '0', '-1', 'WITHSCORES')));
      else if (type === 'list') parts.push(JSON.stringify(await r.lrange(k, 0, -1)));
      else if (type === 'stream') parts.push(JSON.stringify(await r.xrange(k, '-', '+')));
    }
  return parts.join('\n');
}

// ---------------------------------------------------------------------------------------------

describe('a revoked key stops working at once', () => {
  test('on every authenticated route, with no delay, for a user key and an admin key', async () => {
    const admin = sys.adminToken;
    const user = await call('POST', '/v1/admin/keys', admin, { name: 'soon-revoked', user_id: 'carol', project_id: 'carol-proj', scopes: ['chat', 'vision', 'costs'] });
    const ops = await call('POST', '/v1/admin/keys', admin, { name: 'soon-revoked-admin', user_id: 'ops2', project_id: 'ops', scopes: ['admin'] });
    issued.push(user.json.key, ops.json.key);
    const image = png1x1([7, 7, 7]).toString('base64');
    const routes: Array<{ method: string; path: string; key: 'user' | 'ops'; body?: unknown }> = [
      { method: 'POST', path: '/v1/chat', key: 'user', body: { message: 'hi' } },
      { method: 'POST', path: '/v1/chat/completions', key: 'user', body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] } },
      { method: 'POST', path: '/v1/vision', key: 'user', body: { image_base64: image, prompt: 'What?' } },
      { method: 'GET', path: '/v1/costs/summary', key: 'user' },
      { method: 'GET', path: '/v1/costs/entries', key: 'user' },
      { method: 'GET', path: '/v1/costs/entries.csv', key: 'user' },
      { method: 'GET', path: '/v1/alerts', key: 'user' },
      { method: 'GET', path: `/v1/alerts/${alertIds.alice[0]}`, key: 'user' },
      { method: 'GET', path: '/v1/costs/reports/day?at=2026-11-10', key: 'ops' },
      { method: 'GET', path: '/v1/costs/recommendations', key: 'ops' },
      { method: 'GET', path: '/v1/costs/dead-letters', key: 'ops' },
      { method: 'GET', path: '/v1/admin/keys', key: 'ops' },
      { method: 'POST', path: '/v1/admin/keys', key: 'ops', body: { name: 'made-by-ops', user_id: 'z', project_id: 'z' } },
      { method: 'DELETE', path: '/v1/admin/keys/key_doesnotexist0000', key: 'ops' },
      { method: 'GET', path: '/v1/budgets', key: 'ops' },
      { method: 'PUT', path: '/v1/budgets/user/carol', key: 'ops', body: { periods: [{ period: 'month', limit_micros: 1_000_000_000 }] } },
      { method: 'GET', path: '/v1/budgets/user/carol', key: 'ops' },
      { method: 'DELETE', path: '/v1/budgets/user/carol', key: 'ops' },
      { method: 'GET', path: '/v1/alerts/webhooks', key: 'ops' },
      { method: 'GET', path: '/v1/alerts/webhooks/dead-letters', key: 'ops' },
      { method: 'PUT', path: '/v1/alerts/webhooks/ops-hook', key: 'ops', body: { url: 'http://127.0.0.1:9/ops' } },
      { method: 'DELETE', path: '/v1/alerts/webhooks/ops-hook', key: 'ops' },
      { method: 'GET', path: '/v1/alerts/silences', key: 'ops' },
      { method: 'POST', path: '/v1/alerts/silences', key: 'ops', body: { matchers: { scope: 'user', scope_id: 'nobody' }, duration_minutes: 5 } },
      { method: 'DELETE', path: '/v1/alerts/silences/sil_doesnotexist', key: 'ops' },
      { method: 'GET', path: '/v1/ops/status', key: 'ops' },
    ];
    const keyOf = (r: { key: 'user' | 'ops' }) => (r.key === 'user' ? user.json.key : ops.json.key);
    // Before: accepted (or a plain 404 for a resource that is not there).
    for (const r of routes) {
      const res = await call(r.method, r.path, keyOf(r), r.body);
      expect({ route: `${r.method} ${r.path}`, status: res.status }).toEqual({ route: `${r.method} ${r.path}`, status: expect.any(Number) });
      expect([200, 201, 204, 404]).toContain(res.status);
    }
    expect((await readAlertStream(user.json.key, '', 200)).status).toBe(200);

    expect((await call('DELETE', `/v1/admin/keys/${user.json.key_id}`, admin)).status).toBe(204);
    expect((await call('DELETE', `/v1/admin/keys/${ops.json.key_id}`, admin)).status).toBe(204);

    // After: the very next request on every route is 401, in the one error shape; the SSE stream too.
    const failures: string[] = [];
    for (const r of routes) {
      const res = await call(r.method, r.path, keyOf(r), r.body);
      const problems = errorShapeProblems(res, [401]);
      if (problems.length || res.json?.error?.code !== 'unauthorized') failures.push(`${r.method} ${r.path}: ${problems.join('; ')} ${res.text.slice(0, 200)}`);
      // The same key sent the other way is refused as well.
      const alt = await client.send({ method: r.method, path: r.path, headers: { 'x-api-key': keyOf(r), ...(r.body !== undefined && JSON_TYPE) }, ...(r.body !== undefined && { body: JSON.stringify(r.body) }) });
      if (alt.status !== 401) failures.push(`${r.method} ${r.path} via x-api-key: ${alt.status}`);
    }
    expect(failures).toEqual([]);
    expect((await readAlertStream(user.json.key, '', 200)).status).toBe(401);
    const events = await fetch(`${sys.url}/v1/events/stream`, { headers: bearer(ops.json.key) });
    expect(events.status).toBe(401);
    await events.text();
  });
});

describe('a stream opened before the revocation gets nothing after it', () => {
  test('the alert stream of a revoked key delivers no alert after the revocation and ends', async () => {
    const admin = sys.adminToken;
    const viewer = await call('POST', '/v1/admin/keys', admin, { name: 'viewer', user_id: 'dave', project_id: 'dproj', scopes: ['costs'] });
    const spender = await call('POST', '/v1/admin/keys', admin, { name: 'spender', user_id: 'dave', project_id: 'dproj', scopes: ['chat'] });
    issued.push(viewer.json.key, spender.json.key);
    expect((await call('PUT', '/v1/budgets/user/dave', admin, { periods: [{ period: 'day', limit_micros: 1 }] })).status).toBe(201);
    const stream = openStream('/v1/alerts/stream', viewer.json.key);
    try {
      expect(await waitFor(() => stream.status === 200, 5_000)).toBe(true);
      // Positive control: while the key is live, dave's alert reaches the stream.
      expect((await call('POST', '/v1/chat', spender.json.key, { message: 'spend' })).status).toBe(200);
      expect(await waitFor(() => stream.frames.some((f) => f.event === 'alert' && JSON.parse(f.data).scope_id === 'dave'), 15_000, 50)).toBe(true);
      expect(stream.ended).toBe(false);

      expect((await call('DELETE', `/v1/admin/keys/${viewer.json.key_id}`, admin)).status).toBe(204);
      const revokedAt = Date.now();
      // Another alert for dave's project, fired after the revocation.
      expect((await call('PUT', '/v1/budgets/project/dproj', admin, { periods: [{ period: 'day', limit_micros: 1 }] })).status).toBe(201);
      expect((await call('POST', '/v1/chat', spender.json.key, { message: 'spend more' })).status).toBe(200);
      const fired = await waitFor(async () => {
        const all = (await call('GET', '/v1/alerts?scope=project&scope_id=dproj', admin)).json.alerts as unknown[];
        return all.length > 0;
      }, 15_000, 100);
      expect(fired).toBe(true);
      // The stream ends (at the latest when its blocking read returns) and carried nothing new.
      expect(await waitFor(() => stream.ended, 8_000, 50)).toBe(true);
      expect(stream.frames.filter((f) => f.event === 'alert' && f.at >= revokedAt)).toEqual([]);
    } finally {
      await stream.close();
    }
  });

  test('the live event stream of a revoked admin key delivers no event after the revocation and ends', async () => {
    const admin = sys.adminToken;
    const ops = await call('POST', '/v1/admin/keys', admin, { name: 'watcher', user_id: 'ops3', project_id: 'ops', scopes: ['admin'] });
    const spender = await call('POST', '/v1/admin/keys', admin, { name: 'erin', user_id: 'erin', project_id: 'erin-proj', scopes: ['chat'] });
    issued.push(ops.json.key, spender.json.key);
    const stream = openStream('/v1/events/stream?types=*', ops.json.key);
    try {
      expect(await waitFor(() => stream.status === 200, 5_000)).toBe(true);
      expect((await call('POST', '/v1/chat', spender.json.key, { message: 'before' })).status).toBe(200);
      // Positive control: the first call's events reach the stream, through its last ones.
      const last = ['workflow.completed', 'cost.recorded'];
      expect(await waitFor(() => last.every((t) => stream.frames.some((f) => f.event === t)), 10_000, 50)).toBe(true);
      expect(stream.ended).toBe(false);

      const revokedFrom = Date.now();
      expect((await call('DELETE', `/v1/admin/keys/${ops.json.key_id}`, admin)).status).toBe(204);
      expect((await call('POST', '/v1/chat', spender.json.key, { message: 'after' })).status).toBe(200);
      expect(await waitFor(() => stream.ended, 8_000, 50)).toBe(true);
      // Nothing that happened once the revocation was asked for is sent. (An earlier event whose
      // check passed just before the key was deleted may still be in flight; that is allowed.)
      const occurredAfter = stream.frames.filter((f) => Date.parse((JSON.parse(f.data) as { occurred_at: string }).occurred_at) >= revokedFrom);
      expect(occurredAfter).toEqual([]);
    } finally {
      await stream.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('tenant isolation: a key never sees another tenant’s data', () => {
  const other = { alice: 'bob', bob: 'alice' } as const;

  test.each(['alice', 'bob'] as const)('cost summary, entries and CSV show %s only their own spend', async (who) => {
    const me = tenant[who];
    const them = tenant[other[who]];
    const mine = (await sys.reader.entries({ limit: 100, scope: { user: me.user } })).entries;
    expect(mine.length).toBe(3);
    const myTotal = mine.reduce((s, e) => s + e.amount_micros, 0);

    for (const period of ['day', 'week', 'month']) {
      const summary = await call('GET', `/v1/costs/summary?period=${period}&group_by=model`, me.key);
      expect(summary.status).toBe(200);
      expect(summary.json.scope).toEqual({ user: me.user });
      expect(summary.json.total.micros).toBe(myTotal);
    }
    const byProject = await call('GET', `/v1/costs/summary?project_id=${me.project}`, me.key);
    expect(byProject.json.total.micros).toBe(myTotal); // the projects are disjoint here

    const entries = await call('GET', '/v1/costs/entries?limit=1000', me.key);
    expect(entries.json.entries.map((e: { user_id: string }) => e.user_id)).toEqual(mine.map(() => me.user));
    const projectEntries = await call('GET', `/v1/costs/entries?project_id=${me.project}`, me.key);
    expect(new Set(projectEntries.json.entries.map((e: { project_id: string }) => e.project_id))).toEqual(new Set([me.project]));
    const csv = await call('GET', '/v1/costs/entries.csv', me.key);
    expect(csv.status).toBe(200);
    expect(csv.text.trim().split('\n')).toHaveLength(1 + mine.length);
    for (const id of them.requests) {
      expect(entries.text).not.toContain(id);
      expect(csv.text).not.toContain(id);
    }
    expect(csv.text).not.toContain(`,${them.user},`);

    // Asking for the other tenant, or for everyone, by any parameter: refused, never answered.
    for (const path of [
      `/v1/costs/summary?user_id=${them.user}`,
      `/v1/costs/summary?project_id=${them.project}`,
      '/v1/costs/summary?group_by=user',
      '/v1/costs/summary?group_by=project',
      `/v1/costs/entries?user_id=${them.user}`,
      `/v1/costs/entries?project_id=${them.project}`,
      `/v1/costs/entries.csv?user_id=${them.user}`,
      `/v1/costs/entries.csv?project_id=${them.project}`,
      '/v1/costs/reports/day',
      '/v1/costs/recommendations',
      '/v1/costs/dead-letters',
    ]) {
      const res = await call('GET', path, me.key);
      expect({ path, problems: errorShapeProblems(res, [403]) }).toEqual({ path, problems: [] });
    }
  });

  test('a cursor from another tenant’s listing pages through my own entries only', async () => {
    const bobsPage = await call('GET', '/v1/costs/entries?user_id=bob&limit=1', sys.adminToken);
    expect(bobsPage.json.next_cursor).toEqual(expect.any(String));
    const res = await call('GET', `/v1/costs/entries?limit=1000&cursor=${bobsPage.json.next_cursor}`, tenant.alice.key);
    expect(res.status).toBe(200);
    expect(res.json.entries.every((e: { user_id: string }) => e.user_id === 'alice')).toBe(true);
  });

  test.each(['alice', 'bob'] as const)('alerts: list, one alert and the live stream show %s only their own', async (who) => {
    const me = tenant[who];
    const mineIds = alertIds[who];
    const theirIds = alertIds[other[who]];
    const list = await call('GET', '/v1/alerts?limit=1000', me.key);
    expect(list.status).toBe(200);
    expect(list.json.alerts.map((a: { alert_id: string }) => a.alert_id).sort()).toEqual([...mineIds].sort());
    for (const q of [`scope=user&scope_id=${tenant[other[who]].user}`, `scope=project&scope_id=${tenant[other[who]].project}`, 'scope=ops', 'scope=global', 'state=firing', 'since=0']) {
      const res = await call('GET', `/v1/alerts?${q}`, me.key);
      expect(res.status).toBe(200);
      for (const a of res.json.alerts as Array<{ alert_id: string }>) expect(mineIds).toContain(a.alert_id);
    }
    for (const id of theirIds) {
      const res = await call('GET', `/v1/alerts/${id}`, me.key);
      expect(errorShapeProblems(res, [404])).toEqual([]); // not even a 403 that says it exists
    }
    expect((await call('GET', `/v1/alerts/${mineIds[0]}`, me.key)).status).toBe(200);

    // The live feed, replayed from the start of the alerts stream.
    const stream = await readAlertStream(me.key, '?last_event_id=0-0', 10_000, (ids) => mineIds.every((id) => ids.includes(id)));
    expect(stream.status).toBe(200);
    expect([...new Set(stream.ids)].sort()).toEqual([...mineIds].sort());
    expect(stream.ids.filter((id) => theirIds.includes(id))).toEqual([]);
    expect(stream.alerts.every((a) => (a.scope === 'user' && a.scope_id === me.user) || (a.scope === 'project' && a.scope_id === me.project))).toBe(true);
    // An operator sees both.
    const everyone = [...alertIds.alice, ...alertIds.bob];
    const ops = await readAlertStream(adminKey, '?last_event_id=0-0', 10_000, (ids) => everyone.every((id) => ids.includes(id)));
    expect(ops.ids).toEqual(expect.arrayContaining([...alertIds.alice, ...alertIds.bob]));
  });

  test('budgets are admin-only: no tenant reads any budget, their own included', async () => {
    for (const key of [tenant.alice.key, tenant.bob.key]) {
      for (const path of ['/v1/budgets', '/v1/budgets/user/alice', '/v1/budgets/user/bob', '/v1/budgets/project/web', '/v1/budgets/project/mobile', '/v1/budgets/global/global']) {
        expect({ path, problems: errorShapeProblems(await call('GET', path, key), [403]) }).toEqual({ path, problems: [] });
      }
    }
  });

  test('conversations: the same conversation id carries no history across users', async () => {
    const received = await sys.alerting.bus.history({ types: 'chat.message_received' });
    const history = (who: 'alice' | 'bob') => {
      const e = received.find((x) => x.event.correlation_id === tenant[who].requests[0])?.event;
      return e?.type === 'chat.message_received' ? e.data.history_messages : undefined;
    };
    // Both started "shared-conv"; bob's turn came second and still saw no earlier messages.
    expect(history('alice')).toBe(0);
    expect(history('bob')).toBe(0);
    const bobsConversation = await sys.redis.lrange(`${sys.namespace}:conv:bob:shared-conv`, 0, -1);
    expect(bobsConversation.join('\n')).not.toContain("alice's private question");
  });
});

// ---------------------------------------------------------------------------------------------

describe('admin-only endpoints refuse every other key and write nothing', () => {
  test('403 in the one error shape for keys with every non-admin scope', async () => {
    const before = { keys: await sys.redis.scard(`${sys.namespace}:apikeys`), budgets: await sys.redis.smembers(`${sys.namespace}:budgets`), hooks: await sys.redis.hlen(`${sys.namespace}:alerts:webhooks`) };
    const adminRoutes: Array<[string, string, unknown?]> = [
      ['GET', '/v1/admin/keys'],
      ['POST', '/v1/admin/keys', { name: 'escalate', user_id: 'alice', project_id: 'web', scopes: ['admin'] }],
      ['DELETE', `/v1/admin/keys/${(await sys.redis.smembers(`${sys.namespace}:apikeys`))[0]}`],
      ['GET', '/v1/budgets'],
      ['GET', '/v1/budgets/user/alice'],
      ['PUT', '/v1/budgets/user/alice', { periods: [{ period: 'day', limit_micros: 999_999_999 }] }],
      ['PUT', '/v1/budgets/global/global', { periods: [{ period: 'day', limit_micros: 999_999_999 }] }],
      ['DELETE', '/v1/budgets/user/alice'],
      ['GET', '/v1/alerts/webhooks'],
      ['GET', '/v1/alerts/webhooks/dead-letters'],
      ['PUT', '/v1/alerts/webhooks/exfil', { url: 'http://127.0.0.1:9/exfil' }],
      ['DELETE', '/v1/alerts/webhooks/exfil'],
      ['GET', '/v1/costs/reports/day'],
      ['GET', '/v1/costs/recommendations'],
      ['GET', '/v1/costs/dead-letters'],
      ['GET', '/v1/alerts/silences'],
      ['POST', '/v1/alerts/silences', { matchers: { scope: 'global' }, duration_minutes: 60 }],
      ['DELETE', '/v1/alerts/silences/sil_x'],
      ['GET', '/v1/ops/status'],
      ['GET', '/v1/events/stream'],
    ];
    const failures: string[] = [];
    for (const key of [tenant.alice.key, tenant.bob.key]) {
      for (const [method, path, body] of adminRoutes) {
        const res = await call(method, path, key, body);
        const problems = errorShapeProblems(res, [403]);
        if (problems.length || res.json?.error?.code !== 'forbidden') failures.push(`${method} ${path}: ${problems.join('; ')}`);
      }
    }
    expect(failures).toEqual([]);
    expect(await sys.redis.scard(`${sys.namespace}:apikeys`)).toBe(before.keys);
    expect(await sys.redis.smembers(`${sys.namespace}:budgets`)).toEqual(before.budgets);
    expect(await sys.redis.hlen(`${sys.namespace}:alerts:webhooks`)).toBe(before.hooks);
    expect(JSON.parse((await sys.redis.get(`${sys.namespace}:budget:user:alice`))!).periods[0].limit_micros).toBe(1);
  });
});
