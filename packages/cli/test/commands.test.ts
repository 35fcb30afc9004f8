import { alertingKeys, ApiKeyStore, BudgetStore, EventBus, periodKeys } from '@tollgate/shared';
import { keysMatching } from '@tollgate/shared/src/testing';
import { cli, cliRedis, lines } from './run-cli';

const { prefix, namespace, redis, cleanup } = cliRedis('commands');
const run = (...args: string[]) => cli(prefix, args);
afterAll(cleanup);
// Each test runs the real binary a few times (about 0.6 s per start on an idle machine).
jest.setTimeout(60_000);

/** Usage errors: non-zero, exactly one line on stderr, no stack, nothing on stdout. */
function expectOneLineError(r: { code: number | null; stdout: string; stderr: string }, pattern: RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  expect(lines(r.stderr)).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

test('keys: create prints the key once, list shows the record, revoke stops the key', async () => {
  const created = await run('keys', 'create', '--user', 'alice', '--project', 'web', '--scopes', 'chat,costs', '--name', 'ci');
  expect(created.code).toBe(0);
  expect(created.stderr).toBe('');
  const key = /(tg_[A-Za-z0-9_-]+)/.exec(created.stdout)?.[1];
  const keyId = /(key_[0-9a-f]+)/.exec(created.stdout)?.[1];
  expect(key).toBeDefined();
  expect(created.stdout).toMatch(/Created key_\w+ "ci" for user alice, project web, scopes chat,costs\./);

  // The key the CLI printed is a working key for the gateway's own store; Redis holds only its hash.
  const store = new ApiKeyStore(redis, namespace);
  expect(await store.verify(key!)).toMatchObject({ key_id: keyId, user_id: 'alice', project_id: 'web', scopes: ['chat', 'costs'], name: 'ci' });
  expect(JSON.stringify(await keysMatching(redis, `${namespace}:apikey*`))).not.toContain(key!);

  const [asJson, asTable] = await Promise.all([run('keys', 'list', '--json'), run('keys', 'list')]);
  expect(asJson.code).toBe(0);
  const listed = JSON.parse(asJson.stdout) as { keys: Array<Record<string, unknown>> };
  expect(listed.keys).toEqual([expect.objectContaining({ key_id: keyId, user_id: 'alice', project_id: 'web', scopes: ['chat', 'costs'] })]);
  expect(asJson.stdout).not.toContain('tg_');
  expect(lines(asTable.stdout)[0]).toMatch(/^KEY ID\s+NAME\s+USER\s+PROJECT\s+SCOPES\s+CREATED$/);
  expect(lines(asTable.stdout)[1]).toMatch(new RegExp(`^${keyId}\\s+ci\\s+alice\\s+web\\s+chat,costs\\s+\\d{4}-`));

  const revoked = await run('keys', 'revoke', keyId!);
  expect(revoked).toMatchObject({ code: 0, stdout: `Revoked ${keyId}.\n`, stderr: '' });
  expect(await store.verify(key!)).toBeNull();

  const again = await run('keys', 'revoke', keyId!, '--json');
  expectOneLineError(again, new RegExp(`^error: No API key with id ${keyId}\\.`));
});

test('budgets: set keeps the other periods, list shows limits against spend, a bad amount changes nothing', async () => {
  const day = await run('budgets', 'set', 'user', 'alice', '--period', 'day', '--limit-usd', '12.50', '--hard');
  expect(day.code).toBe(0);
  expect(day.stdout).toContain('Set the user alice budget: $12.50 per day, hard, alerts at 50/80/100%.');

  const week = await run('budgets', 'set', 'user', 'alice', '--period', 'week', '--limit-micros', '40000000', '--thresholds', '100,80', '--json');
  expect(week.code).toBe(0);
  const doc = JSON.parse(week.stdout) as { budget: { periods: unknown[] }; created: boolean; status: Record<string, unknown> };
  expect(doc.created).toBe(false);
  expect(doc.status).toMatchObject({ period: 'week', limit_micros: 40_000_000, limit_usd: '40.000000', spent_micros: 0 });

  // What the services read: the same store, both periods present.
  const stored = await new BudgetStore(redis, namespace).get('user', 'alice');
  expect(stored?.periods).toEqual([
    { period: 'day', limit_micros: 12_500_000, mode: 'hard', thresholds_pct: [50, 80, 100] },
    { period: 'week', limit_micros: 40_000_000, mode: 'soft', thresholds_pct: [80, 100] },
  ]);

  // Spend as the alerting service records it.
  await redis.set(alertingKeys(namespace).spent('user', 'alice', 'day', periodKeys(Date.now()).day), 6_250_000);

  const bad = await run('budgets', 'set', 'user', 'alice', '--period', 'day', '--limit-usd', '12.5.0');
  expectOneLineError(bad, /^error: option '--limit-usd <amount>' argument '12\.5\.0' is invalid\. Expected a positive USD amount/);
  const tooPrecise = await run('budgets', 'set', 'project', 'web', '--period', 'day', '--limit-usd', '0.0000001');
  expectOneLineError(tooPrecise, /at most 6 decimals/);
  expect((await new BudgetStore(redis, namespace).get('user', 'alice'))?.periods[0]).toMatchObject({ limit_micros: 12_500_000 });

  const [table, json] = await Promise.all([run('budgets', 'list'), run('budgets', 'list', '--json')]);
  expect(table.code).toBe(0);
  const rows = lines(table.stdout);
  expect(rows[0]).toMatch(/^SCOPE\s+ID\s+PERIOD\s+LIMIT\s+MODE\s+ALERTS AT\s+SPENT\s+USED\s+STATE$/);
  expect(rows.find((r) => r.includes(' day '))).toMatch(/^user\s+alice\s+day \d{4}-\d{2}-\d{2}\s+\$12\.50\s+hard\s+50\/80\/100%\s+\$6\.25\s+50%\s+set$/);
  expect(rows.find((r) => r.includes(' week '))).toMatch(/^user\s+alice\s+week \d{4}-W\d{2}\s+\$40\.00\s+soft\s+80\/100%\s+\$0\.00\s+0%\s+set$/);
  const listed = JSON.parse(json.stdout) as { budgets: Array<{ scope: string; scope_id: string; status: Array<Record<string, unknown>> }> };
  const alice = listed.budgets.find((b) => b.scope === 'user' && b.scope_id === 'alice');
  expect(alice?.status.find((s) => s.period === 'day')).toMatchObject({ spent_micros: 6_250_000, spent_usd: '6.250000', limit_micros: 12_500_000, used_pct: 50, blocked: false });
});

test('events replay: history in order, filtered by type, as text and JSON', async () => {
  const bus = new EventBus({ redis, prefix: namespace, service: 'chat-workflow' });
  const since = new Date(Date.now() - 1_000).toISOString();
  await bus.publish('workflow.started', { workflow: 'chat', job_id: 'j1' }, { correlation_id: 'req-1', user_id: 'alice' });
  await bus.publish('chat.message_received', { conversation_id: 'c1', message_chars: 5, history_messages: 0 }, { correlation_id: 'req-1' });
  await bus.publish('workflow.completed', { workflow: 'chat', job_id: 'j1', duration_ms: 12 }, { correlation_id: 'req-1' });
  await bus.publish('workflow.started', { workflow: 'chat', job_id: 'j2' }, { correlation_id: 'req-2' });

  const [text, json, limited] = await Promise.all([
    run('events', 'replay', '--since', since, '--type', 'workflow.*'),
    run('events', 'replay', '--since', '-5m', '--json'),
    run('events', 'replay', '--since', since, '--limit', '2', '--json'),
  ]);
  expect(text.code).toBe(0);
  const shown = lines(text.stdout);
  expect(shown).toHaveLength(3);
  expect(shown[0]).toMatch(/^\S+Z {2}workflow\.started\s+chat-workflow {2}corr=req-1 {2}user=alice {2}\{"workflow":"chat","job_id":"j1"\}$/);
  expect(shown[1]).toMatch(/ {2}workflow\.completed\s+chat-workflow {2}corr=req-1 /);
  expect(shown[2]).toMatch(/ {2}workflow\.started\s+chat-workflow {2}corr=req-2 /);
  expect(text.stdout).not.toMatch(/\u001b\[/); // a pipe gets no colour

  const doc = JSON.parse(json.stdout) as { events: Array<{ stream_id: string; event: { type: string; correlation_id: string } }>; count: number; truncated: boolean };
  expect(doc.events.map((e) => e.event.type)).toEqual(['workflow.started', 'chat.message_received', 'workflow.completed', 'workflow.started']);
  expect(doc).toMatchObject({ count: 4, truncated: false });
  // Stream ids (ms-seq) strictly increase: the order they were published in.
  const ids = doc.events.map((e) => e.stream_id.split('-').map(BigInt) as [bigint, bigint]);
  ids.slice(1).forEach(([ms, seq], i) => expect(ms > ids[i]![0] || (ms === ids[i]![0] && seq > ids[i]![1])).toBe(true));

  const cut = JSON.parse(limited.stdout) as { count: number; truncated: boolean };
  expect(cut).toMatchObject({ count: 2, truncated: true });
  expect(limited.stderr).toBe(''); // JSON says it in `truncated`
});

test('events replay reads every partition of a partitioned bus (BUS_PARTITIONS), in time order', async () => {
  const bus = new EventBus({ redis, prefix: namespace, service: 'chat-workflow', partitions: 4 });
  try {
    // From now: the other tests' events are in this namespace's home partition too.
    const since = new Date().toISOString();
    const published = [];
    for (let i = 0; i < 12; i++) {
      published.push(await bus.publish('workflow.started', { workflow: 'chat', job_id: `p${i}` }, { correlation_id: `part-${i}` }));
      await new Promise((r) => setTimeout(r, 2)); // distinct milliseconds across the streams
    }
    expect((await Promise.all(bus.streams.map((k) => redis.xlen(k)))).every((len) => len > 0)).toBe(true);
    const [all, homeOnly] = await Promise.all([
      cli(prefix, ['events', 'replay', '--since', since, '--json'], { BUS_PARTITIONS: '4' }),
      cli(prefix, ['events', 'replay', '--since', since, '--json'], { BUS_PARTITIONS: '1' }),
    ]);
    const ids = (r: { stdout: string }) => (JSON.parse(r.stdout) as { events: Array<{ event: { id: string } }> }).events.map((e) => e.event.id);
    expect(ids(all)).toEqual(published.map((e) => e.id));
    // One partition is the home stream, all a one-partition reader sees.
    expect(ids(homeOnly).length).toBeLessThan(published.length);
  } finally {
    for (const k of [...bus.streams, ...bus.deadLetterStreams]) await redis.unlink(k);
  }
});

test('usage errors and an unreachable Redis: non-zero exit, one line on stderr', async () => {
  const results = await Promise.all([
    run('keyz', 'list'),
    run('keys', 'list', '--bogus'),
    run('keys', 'create', '--user', 'al ice', '--project', 'web'),
    run('budgets', 'set', 'user', '--period', 'day', '--limit-usd', '5'),
    run('events', 'tail', '--type', 'nope.*'),
    cli(prefix, ['keys', 'list'], { REDIS_URL: 'redis://127.0.0.1:1', REDIS_CLUSTER_NODES: '' }),
    cli(prefix, ['--prefix', 'bad:prefix', 'keys', 'list']),
    cli(prefix, ['--prefix', prefix, 'keys', 'list'], { BUS_PARTITIONS: '0' }),
  ]);
  const expected = [
    /^error: unknown command 'keyz' \(Did you mean keys\?\)$/m,
    /^error: unknown option '--bogus'$/m,
    /^error: --user: letters, digits, dot, dash or underscore/,
    /^error: A user budget needs the user id/,
    /^error: option '--type <patterns>' argument 'nope\.\*' is invalid\. "nope\.\*" matches no event type/,
    /^error: Cannot reach Redis at 127\.0\.0\.1:1 \(ECONNREFUSED\)/,
    /^error: --prefix: expected 1-64 characters/,
    /^error: BUS_PARTITIONS: expected an integer 1-256, got "0"$/m,
  ];
  results.forEach((r, i) => expectOneLineError(r, expected[i]!));
});

test('cache: stats show hit ratio and savings per kind; purge removes one project only', async () => {
  const { ResponseCache, cacheKey } = await import('@tollgate/shared');
  const cache = new ResponseCache(redis, namespace);
  const web = cacheKey(namespace, { project: 'web', user: 'alice' }, 'chat', 'default', { q: 1 });
  const mobile = cacheKey(namespace, { project: 'mobile', user: 'carol' }, 'chat', 'default', { q: 1 });
  await cache.put(web, { a: 1 }, 60);
  await cache.put(mobile, { a: 1 }, 60);
  await cache.record(web, 'MISS');
  await cache.record(web, 'HIT', 1_500);
  await cache.record(web, 'HIT', 1_500);
  await cache.record(mobile, 'HIT', 250_000);

  const json = await run('cache', 'stats', '--project', 'web', '--json');
  expect(json.code).toBe(0);
  const doc = JSON.parse(json.stdout) as { hit_ratio: number; saved_micros: number; kinds: Array<{ kind: string; hits: number; misses: number }> };
  expect(doc).toMatchObject({ hits: 2, misses: 1, saved_micros: 3_000, saved_usd: '0.003000' });
  expect(doc.hit_ratio).toBeCloseTo(2 / 3);
  expect(doc.kinds.find((k) => k.kind === 'chat')).toMatchObject({ hits: 2, misses: 1 });
  const all = await run('cache', 'stats');
  expect(all.stdout).toMatch(/^Cache for all projects: hit ratio 75\.0%, saved \$0\.253/);
  expect(lines(all.stdout)[1]).toMatch(/^KIND\s+HITS\s+MISSES/);

  const purged = await run('cache', 'purge', '--project', 'web');
  expect(purged).toMatchObject({ code: 0, stdout: 'Purged 1 cache key of project web.\n' });
  expect(await redis.exists(web.key)).toBe(0);
  expect(await redis.exists(mobile.key)).toBe(1);
  const set = await run('cache', 'settings', '--project', 'web', '--chat-ttl', '120', '--json');
  expect(JSON.parse(set.stdout)).toEqual({ project_id: 'web', settings: { chat_ttl_seconds: 120, rag_ttl_seconds: 300, vision_ttl_seconds: 3600, max_ttl_seconds: 86400 } });
  const { CacheSettingsStore } = await import('@tollgate/shared');
  expect((await new CacheSettingsStore(redis, namespace, undefined, 0).get('web')).chat_ttl_seconds).toBe(120);
  const shown = await run('cache', 'settings', '--project', 'web');
  expect(shown.stdout).toMatch(/^Cache settings of project web:\nKIND\s+TTL\nchat\s+120 s/);
  expectOneLineError(await run('cache', 'settings', '--project', 'web', '--rag-ttl', 'soon'), /^error: option '--rag-ttl <seconds>' argument 'soon' is invalid/);
  expectOneLineError(await run('cache', 'purge'), /--project/);
  expectOneLineError(await run('cache', 'purge', '--project', 'a b'), /^error: --project: letters/);
});
