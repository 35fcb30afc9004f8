import { createEvent, loadPriceTable } from '@tollgate/shared';
// The CLI is a package and never imports a service, so its report of what the ledger wrote is tested here.
import { cli, cliRedis, lines } from '../../../packages/cli/test/run-cli';
import { LedgerWriter } from '../src/ledger-writer';
import { toEntry } from '../src/usage-pricing';

const { prefix, namespace, redis, cleanup } = cliRedis('ledger-summary');
const run = (...args: string[]) => cli(prefix, args);
afterAll(cleanup);
jest.setTimeout(60_000);

test('costs summary: the ledger totals for a week, grouped by model', async () => {
  const table = loadPriceTable();
  const writer = new LedgerWriter(redis, namespace);
  const usage = [
    { provider: 'openai', model: 'gpt-4o-mini', units: { input_tokens: 1_000, output_tokens: 500 }, at: '2026-11-17T09:00:00.000Z' },
    { provider: 'openai', model: 'gpt-4o-mini', units: { input_tokens: 2_000, output_tokens: 100 }, at: '2026-11-19T09:00:00.000Z' },
    { provider: 'gemini', model: 'gemini-2.0-flash', units: { images: 2 }, at: '2026-11-20T09:00:00.000Z' },
    // The week after: not in the summary.
    { provider: 'gemini', model: 'gemini-2.0-flash', units: { images: 1 }, at: '2026-11-24T09:00:00.000Z' },
  ];
  const entries = usage.map((u, i) =>
    toEntry(
      createEvent(
        'usage.recorded',
        { provider: u.provider, model: u.model, service: 'chat-workflow', operation: 'chat', units: u.units, usage_source: 'provider', request_id: `req-${i}`, cached: false },
        { correlation_id: `req-${i}`, user_id: 'alice', project_id: 'web', occurred_at: u.at },
        'chat-workflow',
      ),
      table,
    ),
  );
  await Promise.all(entries.map((e) => writer.write(e)));
  const week = entries.slice(0, 3);
  const byModel = (model: string) => week.filter((e) => e.model === model).reduce((s, e) => s + e.amount_micros, 0);
  const total = byModel('gpt-4o-mini') + byModel('gemini-2.0-flash');
  expect(total).toBeGreaterThan(0);

  const [json, text] = await Promise.all([
    run('costs', 'summary', '--period', 'week', '--group-by', 'model', '--at', '2026-11-20', '--json'),
    run('costs', 'summary', '--period', 'week', '--group-by', 'model', '--at', '2026-11-20'),
  ]);
  expect(json.code).toBe(0);
  const summary = JSON.parse(json.stdout) as Record<string, unknown>;
  expect(summary).toMatchObject({
    period: 'week',
    period_key: '2026-W47',
    entries: 3,
    total: { micros: total },
    group_by: 'model',
    groups: [
      { key: 'gemini/gemini-2.0-flash', micros: byModel('gemini-2.0-flash') },
      { key: 'openai/gpt-4o-mini', micros: byModel('gpt-4o-mini') },
    ],
  });
  expect(text.code).toBe(0);
  const out = lines(text.stdout);
  expect(out[0]).toBe('Spend for the week 2026-W47 (2026-11-16 to 2026-11-22 UTC, all users)');
  expect(out[1]).toMatch(/^total\s+\$\d+\.\d{2,6} in 3 entries$/);
  expect(out).toContainEqual(expect.stringMatching(/^MODEL\s+SPEND\s+SHARE$/));
  expect(out).toContainEqual(expect.stringMatching(/^gemini\/gemini-2\.0-flash\s+\$0\.50*\s+\d+\.\d%$/));
});
