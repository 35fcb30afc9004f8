import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { EventBus } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { type FullSystem, startFullSystem } from './full-harness';

/**
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core): usage pushed
 * through the running system shows up in the gauges, the chart and the alert feed without a reload.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = join(__dirname, '..', '..', '..', 'test-artifacts');

let sys: FullSystem;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`);
  sys = await startFullSystem('dash');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await sys?.close();
});

type DashState = {
  gauges: Record<string, { spent_micros: number; limit_micros: number | null }>;
  costEvents: number;
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
