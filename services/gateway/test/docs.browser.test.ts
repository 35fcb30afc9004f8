import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';
import { type FullSystem, startFullSystem } from './full-harness';

/** The API reference at /docs in a real browser (Debian's chromium): rendered from the gateway alone. */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

let sys: FullSystem;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`);
  sys = await startFullSystem('docs');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await sys?.close();
});

test('/docs renders the reference from the gateway alone and shows the chat route', async () => {
  const page = await browser.newPage();
  const elsewhere: string[] = [];
  const failed: string[] = [];
  // Anything not from the gateway is refused and recorded: the page must need nothing else.
  await page.route('**/*', (r) => (r.request().url().startsWith(sys.url) ? r.continue() : (elsewhere.push(r.request().url()), r.abort())));
  page.on('requestfailed', (r) => failed.push(r.url()));
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

  await page.goto(`${sys.url}/docs`);
  const chat = page.locator('.opblock-summary', { hasText: '/v1/chat' }).filter({ hasText: 'Chat with the workflow' });
  await chat.first().waitFor({ timeout: 15_000 });
  expect(await chat.first().locator('.opblock-summary-method').textContent()).toBe('POST');

  // Opening it shows the request body and the documented responses.
  await chat.first().click();
  const block = page.locator('#operations-Chat-postV1Chat');
  await block.locator('.responses-table').first().waitFor({ timeout: 10_000 });
  const codes = await block.locator('.responses-table .response-col_status').allTextContents();
  expect(codes.map((c) => c.trim().slice(0, 3))).toEqual(expect.arrayContaining(['200', '400', '401', '402', '429']));
  expect(await page.locator('.opblock-summary-path', { hasText: '/v1/chat/completions' }).count()).toBe(1);
  expect(await page.title()).toBe('Tollgate gateway API');

  expect(elsewhere).toEqual([]);
  expect(failed).toEqual([]);
  expect(errors).toEqual([]);
}, 60_000);
