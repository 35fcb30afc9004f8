import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BudgetStore, EventBus, Silences, WebhookTargets } from '@tollgate/shared';
import { testRedis, waitFor } from '@tollgate/shared/src/testing';
import { deliveryId } from '../src/dispatch';
import { DELIVERY_HEADER, signature, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../src/webhooks';
import { alertNotices, publishCost, sleep, startTestAlerting, type TestAlerting } from './helpers';

interface Received {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

/** A target that answers with the given statuses in turn (the last one from then on). */
async function target(statuses: number[]): Promise<{ url: string; received: Received[]; server: Server }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const status = statuses[Math.min(received.length, statuses.length - 1)]!;
      received.push({ status, body, headers: req.headers });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received, server };
}

/** A port nothing listens on. */
async function downUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}/hook`;
}

const { redis, prefix: ns, cleanup } = testRedis('alerting-webhooks');
const ledger = new EventBus({ redis, prefix: ns, service: 'cost-ledger' });
const targets = new WebhookTargets(redis, ns);
let alerting: TestAlerting;
const servers: Server[] = [];

beforeAll(async () => {
  alerting = await startTestAlerting(ns);
});
afterAll(async () => {
  await alerting.close();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await cleanup();
});

test('a flaky target gets the alert exactly once, signed; a dead one is dead-lettered after the retries without holding up the others', async () => {
  const flaky = await target([500, 500, 200]);
  const good = await target([200]);
  servers.push(flaky.server, good.server);
  const secret = 'flaky-target-secret-0123456789';
  await targets.put('flaky', { url: flaky.url, secret });
  await targets.put('good', { url: good.url, secret: 'good-target-secret-0123456789' });
  const { secret: generated } = await targets.put('down', { url: await downUrl() });
  expect(generated).toMatch(/^whsec_/);

  await new BudgetStore(redis, ns).put('project', 'hooks', { periods: [{ period: 'day', limit_micros: 1_000 }] });
  await publishCost(ledger, { entryId: 'w1', amount: 500, totals: [{ scope: 'project', scope_id: 'hooks', spent: 500 }] });

  expect(await waitFor(() => good.received.length === 1)).toBe(true);
  expect(await waitFor(() => flaky.received.length === 3)).toBe(true);
  const ok = flaky.received.filter((r) => r.status === 200);
  expect(ok.length).toBe(1);
  const delivery = ok[0]!;
  const ts = String(delivery.headers[TIMESTAMP_HEADER]);
  expect(delivery.headers[SIGNATURE_HEADER]).toBe(signature(secret, ts, delivery.body));
  expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(60);
  const payload = JSON.parse(delivery.body) as { text: string; blocks: unknown[]; alert: { threshold_pct: number; scope_id: string; alert_id: string } };
  expect(payload.text).toMatch(/^:warning: \[Firing\] Project hooks: 50% of the day budget/);
  expect(payload.blocks.length).toBeGreaterThan(0);
  expect(payload.alert).toMatchObject({ threshold_pct: 50, scope_id: 'hooks' });
  // Every attempt is the same delivery: a receiver can deduplicate on the header.
  expect(new Set(flaky.received.map((r) => r.headers[DELIVERY_HEADER])).size).toBe(1);

  // A second alert reaches the healthy target while the dead one is still being retried or given up.
  await publishCost(ledger, { entryId: 'w2', amount: 400, totals: [{ scope: 'project', scope_id: 'hooks', spent: 900 }] });
  expect(await waitFor(() => good.received.length === 2)).toBe(true);
  expect(JSON.parse(good.received[1]!.body).alert.threshold_pct).toBe(80);

  expect(await waitFor(async () => (await targets.deadLetters()).length === 2, 15_000)).toBe(true);
  const dead = await targets.deadLetters();
  expect(dead.every((d) => d.target === 'down' && d.attempts === 3 && /failed/.test(d.error))).toBe(true);
  expect(new Set(dead.map((d) => d.alert_id))).toEqual(new Set([payload.alert.alert_id, JSON.parse(good.received[1]!.body).alert.alert_id]));

  // The same notice enqueued again (a dispatcher that crashed before its ack) is not sent again.
  const streamId = dead.find((d) => d.alert_id === payload.alert.alert_id)!.stream_id;
  const job = await alerting.queue.getJob(deliveryId('flaky', streamId));
  expect(job).toBeDefined();
  await alerting.queue.add('deliver', job!.data, { jobId: deliveryId('flaky', streamId) });
  await sleep(300);
  const okFor = (alertId: string) => flaky.received.filter((r) => r.status === 200 && JSON.parse(r.body).alert.alert_id === alertId).length;
  expect(okFor(payload.alert.alert_id)).toBe(1);
  expect(flaky.received.length).toBe(4); // three tries of the 50% alert, one of the 80% alert
});

test('a silenced alert is recorded and streamed but not sent; once the silence is gone, the next one is', async () => {
  await targets.remove('down');
  await targets.remove('flaky');
  const pager = await target([200]);
  servers.push(pager.server);
  await targets.put('good', { url: pager.url, secret: 'good-target-secret-0123456789' });
  const silences = new Silences(redis, ns);
  const silence = await silences.create({ matchers: { scope: 'project', scope_id: 'quiet' }, duration_minutes: 60, comment: 'load test' }, 'test');

  await new BudgetStore(redis, ns).put('project', 'quiet', { periods: [{ period: 'day', limit_micros: 1_000 }] });
  await publishCost(ledger, { entryId: 'q1', amount: 500, totals: [{ scope: 'project', scope_id: 'quiet', spent: 500 }] });
  const quiet = async () => (await alertNotices(redis, ns)).filter((n) => n.alert.kind === 'cost' && n.alert.scope_id === 'quiet');
  expect(await waitFor(async () => (await quiet()).length === 1)).toBe(true);
  expect((await quiet())[0]!.alert).toMatchObject({ threshold_pct: 50, silenced_by: silence.id });
  await sleep(300);
  expect(pager.received).toEqual([]);

  expect(await silences.remove(silence.id)).toBe(true);
  await publishCost(ledger, { entryId: 'q2', amount: 400, totals: [{ scope: 'project', scope_id: 'quiet', spent: 900 }] });
  expect(await waitFor(() => pager.received.length === 1)).toBe(true);
  expect(JSON.parse(pager.received[0]!.body).alert).toMatchObject({ scope_id: 'quiet', threshold_pct: 80 });
  expect(JSON.parse(pager.received[0]!.body).alert.silenced_by).toBeUndefined();
});
