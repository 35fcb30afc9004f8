import { alertingKeys, BudgetStore, EventBus } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { alertNotices, publishCost, sleep, startTestAlerting, type TestAlerting } from '@tollgate/alerting/test/helpers';
import { ADMIN_TOKEN, startSystem, type System } from './harness';

interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** A minimal EventSource: collects events until closed. */
function subscribe(url: string, headers: Record<string, string>) {
  const ctrl = new AbortController();
  const events: SseEvent[] = [];
  let opened = false;
  let status = 0;
  const done = (async () => {
    const res = await fetch(url, { headers, signal: ctrl.signal });
    status = res.status;
    if (!res.body) return;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        buffer += decoder.decode(value, { stream: true });
        for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
          const frame = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          opened = true;
          const e: SseEvent = { event: 'message', data: '' };
          for (const line of frame.split('\n')) {
            const [k, ...rest] = line.split(': ');
            if (k === 'id') e.id = rest.join(': ');
            else if (k === 'event') e.event = rest.join(': ');
            else if (k === 'data') e.data += rest.join(': ');
          }
          if (e.data) events.push(e);
        }
      }
    } catch {
      // aborted
    }
  })().catch(() => undefined);
  return {
    events,
    alerts: () => events.filter((e) => e.event === 'alert').map((e) => ({ id: e.id!, ...(JSON.parse(e.data) as { scope_id: string; threshold_pct: number; state: string }) })),
    get opened() {
      return opened;
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

let sys: System;
let alerting: TestAlerting;
let ledger: EventBus;
let alice: string;
let bob: string;
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
const open: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  sys = await startSystem('gw-alerts');
  alerting = await startTestAlerting(sys.namespace);
  ledger = new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'cost-ledger' });
  alice = (await sys.keys.create({ name: 'alice', user_id: 'alice', project_id: 'web', scopes: ['chat', 'costs'] })).key;
  bob = (await sys.keys.create({ name: 'bob', user_id: 'bob', project_id: 'other', scopes: ['chat', 'costs'] })).key;
  const budgets = new BudgetStore(sys.redis, sys.namespace);
  await budgets.put('project', 'web', { periods: [{ period: 'day', limit_micros: 10_000 }] });
  await budgets.put('user', 'bob', { periods: [{ period: 'day', limit_micros: 10_000 }] });
});
afterAll(async () => {
  await Promise.all(open.map((s) => s.close()));
  await alerting.close();
  await sys.close();
});

const sse = (headers: Record<string, string>, lastEventId?: string) => {
  const s = subscribe(`${sys.url}/v1/alerts/stream`, { ...headers, ...(lastEventId && { 'last-event-id': lastEventId }) });
  open.push(s);
  return s;
};
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const get = async (path: string, headers: Record<string, string>) => {
  const res = await fetch(`${sys.url}${path}`, { headers });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
};
const spend = (entryId: string, scope: 'user' | 'project', scopeId: string, spent: number) =>
  publishCost(ledger, { entryId, amount: 1_000, totals: [{ scope, scope_id: scopeId, spent }] });

test('an SSE client that reconnects with Last-Event-ID gets exactly the alerts it missed; each viewer sees only its own', async () => {
  const ops = sse(admin);
  const aliceLive = sse(bearer(alice));
  const bobLive = sse(bearer(bob));
  expect(await waitFor(() => ops.opened && aliceLive.opened && bobLive.opened)).toBe(true);

  await spend('s1', 'project', 'web', 5_000);
  expect(await waitFor(() => ops.alerts().length === 1)).toBe(true);
  const last = ops.alerts()[0]!;
  expect(last).toMatchObject({ scope_id: 'web', threshold_pct: 50, state: 'firing' });
  await ops.close();

  // Missed while away. One at a time: crossings that alerting reads together are one jump, which
  // fires only the highest threshold.
  const notices = async (n: number) => waitFor(async () => (await alertNotices(sys.redis, sys.namespace)).length === n);
  await spend('s2', 'project', 'web', 8_000);
  expect(await notices(2)).toBe(true);
  await spend('s3', 'user', 'bob', 10_000);
  expect(await notices(3)).toBe(true);
  await spend('s4', 'project', 'web', 10_000);
  expect(await notices(4)).toBe(true);
  const missed = (await alertNotices(sys.redis, sys.namespace)).slice(1);

  const back = sse(admin, last.id);
  expect(await waitFor(() => back.alerts().length >= 3)).toBe(true);
  await sleep(300);
  expect(back.alerts().map((a) => [a.id, a.scope_id, a.threshold_pct])).toEqual(
    missed.map((n) => [n.streamId, n.alert.kind === 'cost' && n.alert.scope_id, n.alert.kind === 'cost' && n.alert.threshold_pct]),
  );

  // Scoped: alice follows her project, bob his user budget.
  expect(await waitFor(() => aliceLive.alerts().length === 3 && bobLive.alerts().length === 1)).toBe(true);
  expect(aliceLive.alerts().map((a) => [a.scope_id, a.threshold_pct])).toEqual([
    ['web', 50],
    ['web', 80],
    ['web', 100],
  ]);
  expect(bobLive.alerts().map((a) => [a.scope_id, a.threshold_pct])).toEqual([['bob', 100]]);
  const aliceBack = sse(bearer(alice), aliceLive.alerts()[0]!.id);
  expect(await waitFor(() => aliceBack.alerts().length === 2)).toBe(true);
  await sleep(200);
  expect(aliceBack.alerts().map((a) => a.threshold_pct)).toEqual([80, 100]);

  const bad = await fetch(`${sys.url}/v1/alerts/stream`, { headers: { ...admin, 'last-event-id': 'yesterday' } });
  expect(bad.status).toBe(400);
  expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_request');
});

test('the alert history is queryable by scope, state and time, and scoped to the caller', async () => {
  const all = await get('/v1/alerts', admin);
  expect(all.status).toBe(200);
  // Newest first, in the order the notices went out.
  const sent = (await alertNotices(sys.redis, sys.namespace)).map((n) => n.alert.alert_id).reverse();
  expect(all.json.alerts.map((a: { alert_id: string }) => a.alert_id)).toEqual(sent);
  expect((await get('/v1/alerts?scope=user', admin)).json.alerts.map((a: { scope_id: string }) => a.scope_id)).toEqual(['bob']);
  expect((await get('/v1/alerts?state=resolved', admin)).json.alerts).toEqual([]);
  expect((await get('/v1/alerts?state=firing&limit=2', admin)).json.alerts.length).toBe(2);
  expect((await get(`/v1/alerts?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`, admin)).json.alerts).toEqual([]);
  expect((await get(`/v1/alerts?since=${Date.now() - 60_000}`, admin)).json.alerts.length).toBe(4);

  const mine = await get('/v1/alerts', bearer(alice));
  expect(mine.json.alerts.map((a: { scope: string; scope_id: string }) => `${a.scope}:${a.scope_id}`)).toEqual(['project:web', 'project:web', 'project:web']);
  expect((await get('/v1/alerts?scope=global', bearer(alice))).json.alerts).toEqual([]);
  const bobs = await get('/v1/alerts', bearer(bob));
  expect(bobs.json.alerts.map((a: { scope_id: string; inhibited_pct: number[] }) => [a.scope_id, a.inhibited_pct])).toEqual([['bob', [50, 80]]]);
  const aliceAlert = mine.json.alerts[0].alert_id as string;
  expect((await get(`/v1/alerts/${aliceAlert}`, bearer(alice))).json.alert.alert_id).toBe(aliceAlert);
  expect((await get(`/v1/alerts/${aliceAlert}`, bearer(bob))).status).toBe(404);

  for (const q of ['state=burning', 'since=yesterday', 'scope=team', 'limit=0', 'state=firing&state=resolved']) {
    const res = await get(`/v1/alerts?${q}`, admin);
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe('validation_failed');
  }
  expect((await get('/v1/alerts', bearer(sys.apiKey))).status).toBe(200); // default keys carry the costs scope
  expect((await get('/v1/alerts', {})).status).toBe(401);
});

test('webhook targets are admin-only; the secret is shown once', async () => {
  const put = (name: string, body: unknown, headers: Record<string, string>) =>
    fetch(`${sys.url}/v1/alerts/webhooks/${name}`, { method: 'PUT', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const created = await put('ops-slack', { url: 'https://hooks.example.com/services/T/B/x' }, admin);
  expect(created.status).toBe(201);
  const body = (await created.json()) as { webhook: { name: string }; secret: string };
  expect(body.secret).toMatch(/^whsec_/);
  const list = await get('/v1/alerts/webhooks', admin);
  expect(list.json.webhooks).toEqual([{ name: 'ops-slack', url: 'https://hooks.example.com/services/T/B/x', created_at: expect.any(String) }]);
  expect(JSON.stringify(list.json)).not.toContain(body.secret);
  expect((await put('ops-slack', { url: 'ftp://example.com' }, admin)).status).toBe(400);
  expect((await put('ops-slack', { url: 'https://example.com', secret: 'short' }, admin)).status).toBe(400);
  expect((await put('ops-slack', { url: 'https://example.com' }, bearer(alice))).status).toBe(403);
  expect((await get('/v1/alerts/webhooks/dead-letters', admin)).json.dead_letters).toEqual([]);
  const del = await fetch(`${sys.url}/v1/alerts/webhooks/ops-slack`, { method: 'DELETE', headers: admin });
  expect(del.status).toBe(204);
  expect(await sys.redis.hlen(alertingKeys(sys.namespace).webhooks)).toBe(0);
});

test('silences: admin-only, always with an end, listed while in force', async () => {
  const post = (body: unknown, headers: Record<string, string>) =>
    fetch(`${sys.url}/v1/alerts/silences`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const created = await post({ matchers: { scope: 'project', scope_id: 'web', threshold_pct: 50 }, duration_minutes: 30, comment: 'known spike' }, admin);
  expect(created.status).toBe(201);
  const { silence } = (await created.json()) as { silence: { id: string; ends_at: string; created_by: string } };
  expect(Date.parse(silence.ends_at) - Date.now()).toBeGreaterThan(29 * 60_000);
  expect(silence.created_by).toBe('operator');
  for (const bad of [
    { matchers: {}, duration_minutes: 5 },
    { matchers: { scope: 'web' }, duration_minutes: 5 },
    { matchers: { scope_id: 'web' } },
    { matchers: { scope_id: 'web' }, duration_minutes: 5, ends_at: new Date(Date.now() + 60_000).toISOString() },
    { matchers: { scope_id: 'web' }, ends_at: new Date(Date.now() - 60_000).toISOString() },
  ]) {
    const res = await post(bad, admin);
    expect(res.status).toBe(400);
  }
  expect((await post({ matchers: { scope_id: 'web' }, duration_minutes: 5 }, bearer(alice))).status).toBe(403);
  expect((await get('/v1/alerts/silences', admin)).json.silences.map((s: { id: string }) => s.id)).toEqual([silence.id]);
  expect((await fetch(`${sys.url}/v1/alerts/silences/${silence.id}`, { method: 'DELETE', headers: admin })).status).toBe(204);
  expect((await fetch(`${sys.url}/v1/alerts/silences/${silence.id}`, { method: 'DELETE', headers: admin })).status).toBe(404);
  expect((await get('/v1/alerts/silences', admin)).json.silences).toEqual([]);
});
