import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BudgetStore, heldMicros, LedgerReader, ledgerKeys, periodKeys } from '@tollgate/shared';
import { TollgateUsageError, UsageClient, UsageReportError } from '@tollgate/usage-client';
import { cli } from '@tollgate/cli/test/run-cli';
import { type Replicas, startReplicas } from './replicas-harness';

// The usage client around a real fetch to a (local) search API, against real gateways and ledgers.

const PER_QUERY = 5_000; // google/custom-search: $5 per 1,000

describe('withHold', () => {
  let sys: Replicas;
  let search: Server;
  let searchUrl: string;
  let searches = 0;
  let n = 0;

  const tenant = async (limit: number) => {
    const project = `client-proj-${++n}`;
    await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: limit, mode: 'hard' }] });
    const { key } = await sys.keys.create({ name: `c${n}`, user_id: `client-user-${n}`, project_id: project, scopes: ['usage'] });
    return { project, key };
  };
  const held = async (project: string) => (await heldMicros(sys.redis, sys.namespace, 'project', project, periodKeys(Date.now()))).day;
  const entries = async (project: string) => (await new LedgerReader(sys.redis, sys.namespace).entries({ scope: { project }, limit: 100 })).entries;
  const settled = async (project: string, count: number) => {
    for (let i = 0; i < 300; i++) {
      if ((await new LedgerReader(sys.redis, sys.namespace).count({ project })) >= count && (await held(project)) === 0) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('the ledger did not settle');
  };

  beforeAll(async () => {
    sys = await startReplicas('usage-client', { gateways: 1, chatWorkers: 0, visionWorkers: 0, ledgers: 1 });
    // Answers like Google's Custom Search JSON API: `items`, at most `num` of them.
    search = createServer((req, res) => {
      searches++;
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.searchParams.get('q') === 'fail') {
        res.writeHead(500).end();
        return;
      }
      const num = Number(url.searchParams.get('num') ?? 10);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ items: Array.from({ length: Math.min(num, 3) }, (_, i) => ({ title: `result ${i}`, link: `https://example.com/${i}` })) }));
    });
    await new Promise<void>((r) => search.listen(0, '127.0.0.1', r));
    searchUrl = `http://127.0.0.1:${(search.address() as AddressInfo).port}/customsearch/v1`;
  });
  afterAll(async () => {
    await new Promise((r) => search?.close(r));
    await sys?.close();
  });

  const googleSearch = async (q: string) => {
    const res = await fetch(`${searchUrl}?q=${encodeURIComponent(q)}&num=10`);
    if (!res.ok) throw new Error(`search failed: ${res.status}`);
    return ((await res.json()) as { items: Array<{ title: string }> }).items;
  };

  test('holds, runs the call and settles with the units it used', async () => {
    const { project, key } = await tenant(1_000_000);
    const usage = new UsageClient({ baseUrl: sys.gateways[0]!.url, apiKey: key });
    let heldDuring = 0;
    const items = await usage.withHold('google/custom-search', 5, async (hold) => {
      expect(hold).toMatchObject({ held: true, worst_micros: 5 * PER_QUERY });
      heldDuring = await held(project);
      const found = await Promise.all([googleSearch('tollgate'), googleSearch('budget holds')]);
      return { result: found.flat(), units: found.length };
    });
    expect(items).toHaveLength(6);
    expect(heldDuring).toBe(5 * PER_QUERY);
    await settled(project, 1);
    const [entry] = await entries(project);
    expect(entry).toMatchObject({ operation: 'google/custom-search', amount_micros: 2 * PER_QUERY, units: { calls: 1, quantity: 2 }, service: 'external' });
  });

  test('releases the hold when the call throws, and records nothing', async () => {
    const { project, key } = await tenant(1_000_000);
    const usage = new UsageClient({ baseUrl: sys.gateways[0]!.url, apiKey: key });
    await expect(usage.withHold('google/custom-search', 1, async () => ({ result: await googleSearch('fail'), units: 1 }))).rejects.toThrow('search failed: 500');
    expect(await held(project)).toBe(0);
    expect(await entries(project)).toHaveLength(0);
  });

  test('a hold the budget cannot take throws 402 before the call is made', async () => {
    const { project, key } = await tenant(10_000);
    const usage = new UsageClient({ baseUrl: sys.gateways[0]!.url, apiKey: key });
    const before = searches;
    const err = await usage.withHold('google/custom-search', 3, async () => ({ result: await googleSearch('x'), units: 3 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TollgateUsageError);
    expect(err).toMatchObject({ status: 402, code: 'budget_exceeded', budget: { scope: 'project', scope_id: project, limit_micros: 10_000, request_worst_case_micros: 15_000 } });
    expect(searches).toBe(before);
  });

  test('a report whose answer was lost is retried and still counted once', async () => {
    const { project, key } = await tenant(1_000_000);
    let dropped = 0;
    // The first report reaches the gateway, but its answer never reaches the caller.
    const lossy: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (String(input).endsWith('/v1/usage') && dropped++ === 0) throw new TypeError('fetch failed');
      return res;
    };
    const usage = new UsageClient({ baseUrl: sys.gateways[0]!.url, apiKey: key, fetch: lossy, retryDelayMs: 10 });
    expect(await usage.withHold('google/custom-search', 4, async () => ({ result: 'ok', units: 3 }))).toBe('ok');
    expect(dropped).toBe(2);
    await settled(project, 1);
    await new Promise((r) => setTimeout(r, 150));
    expect((await entries(project)).map((e) => e.amount_micros)).toEqual([3 * PER_QUERY]);
  });

  test('a report that cannot be delivered gives back the result with the error', async () => {
    const { key } = await tenant(1_000_000);
    const usage = new UsageClient({ baseUrl: sys.gateways[0]!.url, apiKey: key });
    const err = await usage.withHold('google/custom-search', 1, async () => ({ result: 'answer', units: 2, calls: 0 })).catch((e: unknown) => e);
    // calls: 0 is invalid, so the report is refused for good; the caller still has the call's answer.
    expect(err).toBeInstanceOf(UsageReportError);
    expect((err as UsageReportError<string>).result).toBe('answer');
  });

  test('tollgate usage hold | report | release', async () => {
    const { project, key } = await tenant(100_000);
    const env = { TOLLGATE_URL: sys.gateways[0]!.url, TOLLGATE_KEY: key };
    const hold = await cli('unused', ['usage', 'hold', 'google/places-text-search', '0', '--json'], env);
    expect(hold.code).toBe(0);
    const { hold_id } = JSON.parse(hold.stdout) as { hold_id: string };
    const report = await cli('unused', ['usage', 'report', 'google/places-text-search', '4', '--hold', hold_id], env);
    expect(report.stdout).toMatch(/Recorded google\/places-text-search: 4 units, \$0\.032 at price version 2026-01-01 \(hold .*: settling\)/);
    const second = await cli('unused', ['usage', 'hold', 'google/places-text-search', '0'], env);
    const id2 = /Hold id: (\S+)/.exec(second.stdout)![1]!;
    expect((await cli('unused', ['usage', 'release', id2], env)).stdout).toContain(`Released hold ${id2}.`);
    const refused = await cli('unused', ['usage', 'hold', 'google/places-text-search', '0', '--calls', '3'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/402 budget_exceeded: .*limit \$0\.10, this call \$0\.096/);
    const unknown = await cli('unused', ['usage', 'report', 'acme/teleport', '1'], env);
    expect(unknown.stderr).toContain('400 unknown_operation: Unknown operation "acme/teleport"');
    await settled(project, 1);
    expect((await entries(project)).map((e) => e.amount_micros)).toEqual([32_000]);
  }, 60_000);
});
