import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { EventBus } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { png1x1 } from '@tollgate/vision/test/images';
import { type FullSystem, startFullSystem } from './full-harness';
import { type JourneyService, startJourneyService } from './journey-service';

/**
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core): usage pushed
 * through the running system shows up in the gauges, the chart and the alert feed without a reload;
 * journeys driven through the API (with the journey service running) and external usage reported
 * through it show up in their panels.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = join(__dirname, '..', '..', '..', 'test-artifacts');

let sys: FullSystem;
let browser: Browser;
let page: Page;
let journeys: JourneyService;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`);
  sys = await startFullSystem('dash');
  journeys = await startJourneyService(sys, 60_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await journeys?.close();
  await sys?.close();
});

type DashState = {
  gauges: Record<string, { spent_micros: number; limit_micros: number | null }>;
  costEvents: number;
  streams: Record<string, boolean>;
  alerts: Array<{ threshold_pct?: number; state?: string }>;
  events: Array<{ type: string }>;
  status: { breakers: unknown[] } | null;
  buckets: { model: Map<number, Record<string, number>> };
  analytics: {
    from: number;
    to: number;
    totals: Record<string, number | null> | null;
    points: Array<{ t: string; requests?: number; latency_p50?: number | null }>;
    axes: Record<string, { min: number; max: number }>;
  } | null;
  analyticsRefreshes?: number;
  journeysRefreshes?: number;
  externalRefreshes?: number;
};

// Page-side globals, typed here because the test compiles without the DOM library.
type PageGlobals = { __tollgate: DashState; document: { querySelector(sel: string): { textContent: string | null } | null; querySelectorAll(sel: string): { length: number } } };

async function dash<T>(fn: (s: DashState) => T): Promise<T> {
  return page.evaluate(`(${fn.toString()})(window.__tollgate)`) as Promise<T>;
}

test('gauges, chart data and alerts appear live as usage flows through the system', async () => {
  // A small global daily budget, so two images cross 50% and 100%.
  const put = await fetch(`${sys.url}/v1/budgets/global/global`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${sys.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ periods: [{ period: 'day', limit_micros: 500_000, mode: 'soft', thresholds_pct: [50, 100] }] }),
  });
  expect(put.status).toBe(201);

  await page.goto(`${sys.url}/dashboard`);
  await page.fill('#key', sys.adminToken);
  await page.click('button[type=submit]');
  await page.waitForSelector('.gauge[data-period="day"]');
  expect(await page.textContent('.gauge[data-period="day"] [data-role="spent"]')).toBe('$0.000000');
  expect(await page.isVisible('#login')).toBe(false);

  // Usage enters the system the way the workers emit it; the ledger prices it, alerting judges it.
  const worker = new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'vision' });
  const usage = (n: number) => ({
    type: 'usage.recorded' as const,
    data: {
      provider: 'gemini', model: 'gemini-2.0-flash', service: 'vision', operation: 'vision', units: { images: 1 },
      usage_source: 'provider' as const, request_id: `dash-${n}`, cached: false,
    },
    meta: { correlation_id: `dash-${n}`, user_id: 'alice', project_id: 'web' },
  });
  // Published only once the live streams are open: one opened after an event never shows it.
  await page.waitForFunction(
    () => ['/v1/alerts/stream', '/v1/events/stream?types=cost.recorded'].every((p) => (globalThis as unknown as PageGlobals).__tollgate.streams[p]),
    undefined,
    { timeout: 15_000 },
  );
  await worker.publishMany([usage(1)]);
  await page.waitForFunction(() => (globalThis as unknown as PageGlobals).__tollgate.costEvents >= 1, undefined, { timeout: 15_000 });
  await worker.publishMany([usage(2)]);
  await page.waitForFunction(() => (globalThis as unknown as PageGlobals).__tollgate.costEvents >= 2, undefined, { timeout: 15_000 });

  // Gauge: $0.50 of $0.50 spent today, 100%.
  await page.waitForFunction(
    () => (globalThis as unknown as PageGlobals).document.querySelector('.gauge[data-period="day"] [data-role="spent"]')?.textContent === '$0.500000',
    undefined,
    { timeout: 15_000 },
  );
  expect(await page.getAttribute('.gauge[data-period="day"]', 'class')).toContain('bad');

  // Chart: the live series holds both images under their model.
  const charted = await dash((s) => [...s.buckets.model.values()].reduce((sum, row) => sum + (row['gemini/gemini-2.0-flash'] ?? 0), 0));
  expect(charted).toBe(500_000);
  expect(await page.locator('#chart .uplot').count()).toBe(1);

  // Alerts: 50% and 100% arrived on the live feed, no reload.
  await page.waitForFunction(() => (globalThis as unknown as PageGlobals).document.querySelectorAll('#alerts li').length >= 2, undefined, { timeout: 15_000 });
  const thresholds = await dash((s) => s.alerts.map((a) => a.threshold_pct).sort());
  expect(thresholds).toEqual([100, 50]);
  expect(await page.textContent('#alerts')).toMatch(/global: day 100% - \$0\.500000 of \$0\.500000/);

  // The event feed and the status tables are live too.
  expect(await waitFor(async () => (await dash((s) => s.events.filter((e) => e.type === 'cost.recorded').length)) >= 2)).toBe(true);
  expect(await dash((s) => s.status !== null)).toBe(true);
  expect(await page.locator('#breakers tbody tr').count()).toBeGreaterThan(0);
  // The cache panel: one row per kind, from /v1/cache/stats.
  await page.waitForFunction(() => (globalThis as unknown as PageGlobals).document.querySelectorAll('#cache tbody tr').length === 3, undefined, { timeout: 15_000 });
  expect(await page.textContent('#cache tbody')).toMatch(/^chat.*rag.*vision/);

  // Analytics panels: real chats (one streamed) through the system show up with today's time axis.
  const chatKey = (await sys.keys.create({ name: 'dash-chat', user_id: 'alice', project_id: 'web', scopes: ['chat'] })).key;
  const chat = (body: unknown, path = '/v1/chat') =>
    fetch(`${sys.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${chatKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  for (let i = 0; i < 3; i++) expect((await chat({ message: `dash ${i}` })).status).toBe(200);
  const streamed = await chat({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'stream please' }] }, '/v1/chat/completions');
  expect(streamed.status).toBe(200);
  await streamed.text();
  expect(
    await waitFor(async () => {
      await page.click('#an-apply');
      await page.waitForFunction((n) => ((globalThis as unknown as PageGlobals).__tollgate.analyticsRefreshes ?? 0) > n, await dash((s) => s.analyticsRefreshes ?? 0), { timeout: 10_000 });
      return (await dash((s) => s.analytics?.totals?.completed ?? 0)) >= 4;
    }, 20_000, 200),
  ).toBe(true);
  const an = (await dash((s) => s.analytics))!;
  const now = Date.now();
  expect(an.totals).toMatchObject({ requests: 4, completed: 4, failed: 0 });
  expect(an.totals!.latency_p50).toBeGreaterThan(0);
  expect(an.totals!.ttft_p50).toBeGreaterThan(0);
  // Today's axis: both charts span the last 24 hours up to now, and the traffic is in today's last bucket.
  for (const id of ['an-latency', 'an-throughput']) {
    expect(an.axes[id]!.max * 1000).toBeGreaterThan(now - 60_000);
    expect(an.axes[id]!.max * 1000).toBeLessThanOrEqual(now + 60_000);
    expect(an.axes[id]!.min * 1000).toBeGreaterThanOrEqual(now - 24 * 3_600_000 - 60_000);
  }
  const busy = an.points.filter((p) => (p.requests ?? 0) > 0);
  expect(busy.length).toBeGreaterThan(0);
  for (const p of busy) expect(p.t.slice(0, 10)).toBe(new Date().toISOString().slice(0, 10));
  expect(await page.locator('#an-latency .uplot').count()).toBe(1);
  expect(await page.locator('#an-throughput .uplot').count()).toBe(1);
  // Cost per successful request by model: the chat models, and the images priced by the ledger.
  expect(await page.locator('#an-models tbody tr').count()).toBeGreaterThanOrEqual(2);
  expect(await page.textContent('#an-models')).toContain('gemini/gemini-2.0-flash');
}, 90_000);

/* eslint-disable @typescript-eslint/no-explicit-any */
async function call(method: string, path: string, key: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${sys.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : undefined) as any };
}

/** Clicks Apply and waits until the journeys and external panels have both redrawn since. */
async function applyFilters(user = '', project = '') {
  await page.fill('#an-user', user);
  await page.fill('#an-project', project);
  const before = await dash((s) => [s.journeysRefreshes ?? 0, s.externalRefreshes ?? 0]);
  await page.click('#an-apply');
  await page.waitForFunction(
    ([j, e]) => {
      const s = (globalThis as unknown as PageGlobals).__tollgate;
      return (s.journeysRefreshes ?? 0) > j! && (s.externalRefreshes ?? 0) > e!;
    },
    before,
    { timeout: 10_000 },
  );
}
/** The text of each cell of the table rows matching `selector`. */
const cells = (selector: string) =>
  page.$$eval(selector, (rows) => rows.map((r) => Array.from((r as unknown as { cells: ArrayLike<{ textContent: string }> }).cells, (c) => c.textContent)));

test('journeys (per-template conversion, per-step funnel, active ones) and external usage by operation show what the API recorded', async () => {
  const carol = (await sys.keys.create({ name: 'carol', user_id: 'carol', project_id: 'shop', scopes: ['chat', 'vision', 'costs', 'usage'] })).key;
  const dave = (await sys.keys.create({ name: 'dave', user_id: 'dave', project_id: 'home', scopes: ['chat', 'vision', 'costs', 'usage'] })).key;
  const start = async (key: string, template: string) => {
    const r = await call('POST', '/v1/journeys', key, { template });
    expect(r.status).toBe(201);
    return r.json.id as string;
  };
  const inJourney = (id: string) => ({ 'x-tollgate-journey': id });
  const view = async (id: string) => (await call('GET', `/v1/journeys/${id}`, sys.adminToken)).json;
  const stepDone = (id: string, step: string) => waitFor(async () => (await view(id)).steps.find((s: any) => s.key === step).status === 'completed', 10_000);

  // Kitchen renovation: carol finishes one (brief, photos, plan) and has a second at its brief; dave starts a bathroom one.
  const done = await start(carol, 'kitchen-renovation');
  expect((await call('POST', '/v1/chat', carol, { message: 'A galley kitchen, 3 by 2 metres.', model: 'gpt-4o-mini' }, inJourney(done))).status).toBe(200);
  expect(await stepDone(done, 'brief')).toBe(true);
  const image = png1x1([200, 180, 150]).toString('base64');
  expect((await call('POST', '/v1/vision', carol, { image_base64: image, prompt: 'What room is this?' }, inJourney(done))).status).toBe(200);
  expect(await stepDone(done, 'photos')).toBe(true);
  expect((await call('POST', '/v1/chat', carol, { message: 'Draft the plan.', model: 'gpt-4o-mini' }, inJourney(done))).status).toBe(200);
  expect(await waitFor(async () => (await view(done)).state === 'completed' && (await view(done)).cost.entries === 3, 10_000)).toBe(true);
  const active = await start(carol, 'kitchen-renovation');
  expect((await call('POST', '/v1/chat', carol, { message: 'An L-shaped kitchen with an island.', model: 'gpt-4o-mini' }, inJourney(active))).status).toBe(200);
  expect(await stepDone(active, 'brief')).toBe(true);
  expect(await waitFor(async () => (await view(active)).cost.entries === 1, 10_000)).toBe(true);
  const bath = await start(dave, 'bathroom-refresh');
  const doneCost = (await view(done)).cost.total.micros as number;
  const activeCost = (await view(active)).cost.total.micros as number;
  expect(doneCost).toBeGreaterThan(30_000); // the image alone is $0.03
  expect(activeCost).toBeGreaterThan(0);

  // External usage: carol holds 10 searches and uses 3 ($5 per 1,000); dave reports 2 place searches ($0.032 each).
  const hold = await call('POST', '/v1/usage/holds', carol, { operation: 'google/custom-search', units: 10 });
  expect(hold.status).toBe(201);
  expect((await call('POST', '/v1/usage', carol, { operation: 'google/custom-search', units: 3, hold_id: hold.json.hold_id })).status).toBe(202);
  expect((await call('POST', '/v1/usage', dave, { operation: 'google/places-text-search', units: 0, calls: 2 }, { 'idempotency-key': 'dash-places-1' })).status).toBe(202);
  const externalToday = async () => (await call('GET', '/v1/costs/summary?period=day&group_by=service', sys.adminToken)).json.groups.find((g: any) => g.key === 'external')?.micros;
  expect(await waitFor(async () => (await externalToday()) === 79_000, 10_000)).toBe(true);

  await applyFilters();
  const usdOf = (m: number) => `$${Math.floor(m / 1e6)}.${String(m % 1e6).padStart(6, '0')}`;
  // Template figures: 2 started, 1 completed, so 50%; cost per completed is the finished journey's whole cost.
  expect(await cells('#jr-templates tbody tr[data-template="kitchen-renovation"]')).toEqual([
    ['kitchen-renovation', '1', '2', '1', '1', '0', '0', '50.0%', usdOf(doneCost)],
  ]);
  expect(await cells('#jr-templates tbody tr[data-template="bathroom-refresh"]')).toEqual([['bathroom-refresh', '1', '1', '0', '1', '0', '0', '0.0%', '-']]);
  // Per step: both passed the brief, one of two the photos (drop-off 1 of 2), the one that got there planned; materials is optional.
  expect((await cells('#jr-steps [data-template="kitchen-renovation"] tbody tr')).map((r) => r.slice(0, 6))).toEqual([
    ['brief', '2', '2', '100.0%', '0.0%', '0'],
    ['photos', '2', '1', '50.0%', '50.0%', '0'],
    ['plan', '1', '1', '100.0%', '0.0%', '0'],
    ['materials (optional)', '1', '0', '0.0%', '100.0%', '0'],
  ]);
  // Active journeys: carol's second at 20% (the brief weighs 1 of 5) and dave's at 0%, with what each cost so far.
  const activeRows = await cells('#jr-active tbody tr');
  expect(activeRows.map((r) => r.slice(0, 6)).sort()).toEqual([
    [active, 'carol', 'shop', 'kitchen-renovation v1', '20.0%', usdOf(activeCost)],
    [bath, 'dave', 'home', 'bathroom-refresh v1', '0.0%', '$0.000000'],
  ].sort());
  expect(activeRows.some((r) => r[0] === done)).toBe(false);

  // External: today's cost per operation beside its rates, the unused operation at zero.
  expect(await cells('#ex-operations tbody tr')).toEqual([
    ['google/places-text-search', '$0.032000', '-', '-', '$0.064000', '81.0%'],
    ['google/custom-search', '-', '-', '$5.000000', '$0.015000', '19.0%'],
    ['youtube/search', '-', '$0.000000', '-', '$0.000000', '0.0%'],
  ]);
  expect(await page.textContent('#ex-summary')).toMatch(/^\(today, \d{4}-\d{2}-\d{2} UTC: \$0\.079000 of \$\d+\.\d{6} total spend\)$/);
  expect(await page.textContent('#ex-prices')).toContain('Rates from price version 2026-01-01');

  // The user filter narrows the active journeys and the external spend to that user.
  await applyFilters('dave');
  expect((await cells('#jr-active tbody tr')).map((r) => r[0])).toEqual([bath]);
  expect(await page.textContent('#ex-summary')).toMatch(/for user dave: \$0\.064000 of \$0\.064000 total spend/);
  expect((await cells('#ex-operations tbody tr')).map((r) => [r[0], r[4]])).toEqual([
    ['google/places-text-search', '$0.064000'],
    ['google/custom-search', '$0.000000'],
    ['youtube/search', '$0.000000'],
  ]);
  await applyFilters('', 'shop');
  expect((await cells('#jr-active tbody tr')).map((r) => r[0])).toEqual([active]);
  expect(await page.textContent('#ex-summary')).toMatch(/for project shop: \$0\.015000 of /);
  await applyFilters();

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
}, 90_000);

test('the data endpoints behind the page need an admin key', async () => {
  const keyOf = await sys.keys.create({ name: 'plain', user_id: 'bob', project_id: 'web', scopes: ['costs'] });
  for (const path of ['/v1/ops/status', '/v1/events/stream', '/v1/budgets/global/global']) {
    const r = await fetch(`${sys.url}${path}`, { headers: { authorization: `Bearer ${keyOf.key}` } });
    expect([path, r.status]).toEqual([path, 403]);
  }
  const bad = await fetch(`${sys.url}/v1/events/stream?types=not%20a%20type!`, { headers: { authorization: `Bearer ${sys.adminToken}` } });
  expect(bad.status).toBe(400);
  // The page itself carries no data and no key.
  const html = await (await fetch(`${sys.url}/dashboard`)).text();
  expect(html).toContain('<title>Tollgate dashboard</title>');
  expect(html).not.toContain(sys.adminToken);
});

test('the flags and their recent changes are on the page, and a flag can be turned off from it', async () => {
  const put = await fetch(`${sys.url}/v1/flags/tollgate.kill.vision-high`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${sys.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'kill-switch', enabled: true }),
  });
  expect(put.status).toBe(201);
  const row = page.locator('#flags tr[data-flag="tollgate.kill.vision-high"]');
  await row.waitFor({ timeout: 10_000 });
  expect(await row.textContent()).toMatch(/kill-switch.*on/);
  await row.locator('button').click();
  await page.waitForFunction(() => /vision-high updated on -> off by operator/.test((globalThis as unknown as PageGlobals).document.querySelector('#flag-changes')?.textContent ?? ''), undefined, { timeout: 10_000 });
  const stored = await fetch(`${sys.url}/v1/flags/tollgate.kill.vision-high`, { headers: { authorization: `Bearer ${sys.adminToken}` } });
  expect(((await stored.json()) as { enabled: boolean }).enabled).toBe(false);
}, 60_000);
