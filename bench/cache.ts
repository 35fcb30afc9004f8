/**
 * `pnpm bench cache`: what the cache pays back, measured in the ledger. A replayed workload in
 * which a share of the requests (40% by default) repeat earlier ones runs twice through the real
 * services (gateway -> queue -> chat worker -> stub, cost-ledger pricing every usage event): once
 * with `Cache-Control: no-store` under one project, once with `max-age` under another. The cost
 * reduction is the ledger's own totals of the two projects; the target is within a point of the
 * duplicate share. Then cache hits under load against Portkey's plain proxy to the same stub:
 * req/s, p99 and the gateway's CPU per hit. Loopback only; bounded in time.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { ApiKeyStore, createRedis, hashTagged, LedgerReader, deleteByPrefix } from '../packages/shared/src';
import { cpuMs, type Proc, start, waitHttp } from './gateway';
import type { SummaryRow } from './summary';

const root = join(__dirname, '..');
const { build } = require('../scripts/build.js') as { build(options?: { only?: string[] }): Promise<unknown> };
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const REQUESTS = Number(process.env.BENCH_CACHE_REQUESTS ?? 1000);
const REPEAT_SHARE = Number(process.env.BENCH_CACHE_REPEAT_SHARE ?? 0.4);
const REPLAY_CONCURRENCY = Number(process.env.BENCH_CACHE_REPLAY_CONCURRENCY ?? 16);
const DURATION = Number(process.env.BENCH_DURATION_S ?? 8);
const CONCURRENCIES = (process.env.BENCH_CONCURRENCY ?? '20,100').split(',').map(Number);
// Not the gateway bench's ports, so the two can run on one machine.
const PORTS = { stub: 4123, portkey: 8823, gateway: 8223 };

/** A seeded PRNG (mulberry32), so every run replays the same workload. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The workload: each request either asks something new or repeats an earlier question, exactly `share` of them repeats. */
export function workload(total: number, share: number, seed = 42): string[] {
  const random = rng(seed);
  const repeats = Math.round(total * share);
  const slots = Array.from({ length: total }, (_, i) => i);
  // Which positions repeat: a seeded shuffle; the first request is always new.
  for (let i = slots.length - 1; i > 1; i--) {
    const j = 1 + Math.floor(random() * i);
    [slots[i], slots[j]] = [slots[j]!, slots[i]!];
  }
  const repeatAt = new Set(slots.slice(1, repeats + 1));
  const asked: string[] = [];
  const out: string[] = [];
  for (let i = 0; i < total; i++) {
    if (repeatAt.has(i) && asked.length > 0) out.push(asked[Math.floor(random() * asked.length)]!);
    else {
      const q = `Question ${String(asked.length).padStart(5, '0')}: how does a response cache keep tenants apart?`;
      asked.push(q);
      out.push(q);
    }
  }
  return out;
}

async function replay(url: string, key: string, questions: string[], cacheControl: string): Promise<{ ok: number; failed: number; hits: number }> {
  let next = 0;
  const counts = { ok: 0, failed: 0, hits: 0 };
  const worker = async () => {
    while (next < questions.length) {
      const q = questions[next++]!;
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'cache-control': cacheControl },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: q }] }),
      });
      await res.arrayBuffer();
      if (res.ok) counts.ok++;
      else counts.failed++;
      if (res.headers.get('x-tollgate-cache') === 'HIT') counts.hits++;
    }
  };
  await Promise.all(Array.from({ length: REPLAY_CONCURRENCY }, worker));
  return counts;
}

interface Row {
  target: string;
  concurrency: number;
  'req/s': number;
  'p50 ms': number;
  'p99 ms': number;
  ok: number;
  errors: number;
  'gateway CPU µs/req'?: number;
}

export async function run(): Promise<SummaryRow[]> {
  const prefix = `bench-cache-${randomUUID().slice(0, 8)}`;
  const ns = hashTagged(prefix);
  const redis = createRedis(REDIS_URL, { name: 'bench-cache' });
  const procs: Proc[] = [];
  const env = {
    TOLLGATE_PREFIX: prefix,
    LOG_LEVEL: 'warn',
    STUB_PORT: String(PORTS.stub),
    GATEWAY_PORT: String(PORTS.gateway),
    RATE_LIMIT_PER_MINUTE: '100000000',
    CHAT_FALLBACK_CHAIN: 'openai:gpt-4o-mini,deepseek:deepseek-chat',
  };
  try {
    await build({ only: ['stub-llm', 'gateway', 'chat-workflow', 'cost-ledger'] });
    procs.push(start('stub', process.execPath, ['packages/stub-llm/dist/index.js'], env));
    procs.push(start('portkey', process.execPath, ['node_modules/@portkey-ai/gateway/build/start-server.js', `--port=${PORTS.portkey}`, '--headless']));
    for (const service of ['gateway', 'chat-workflow', 'cost-ledger']) procs.push(start(service, process.execPath, [`services/${service}/dist/index.js`], env));
    const stubUrl = `http://127.0.0.1:${PORTS.stub}`;
    const gatewayUrl = `http://127.0.0.1:${PORTS.gateway}`;
    await waitHttp(`${stubUrl}/healthz`);
    await waitHttp(`http://127.0.0.1:${PORTS.portkey}/`);
    await waitHttp(`${gatewayUrl}/readyz`);
    const store = new ApiKeyStore(redis, ns);
    const plain = (await store.create({ name: 'uncached', user_id: 'bench', project_id: 'uncached', scopes: ['chat'] })).key;
    const cached = (await store.create({ name: 'cached', user_id: 'bench', project_id: 'cached', scopes: ['chat'] })).key;

    const questions = workload(REQUESTS, REPEAT_SHARE);
    const duplicates = questions.length - new Set(questions).size;
    const duplicateShare = duplicates / questions.length;
    process.stdout.write(`  replaying ${questions.length} requests (${duplicates} repeats, ${(duplicateShare * 100).toFixed(1)}%) without and with the cache...\n`);
    const without = await replay(gatewayUrl, plain, questions, 'no-store');
    const withCache = await replay(gatewayUrl, cached, questions, 'max-age=3600');

    // The ledger is the measure: wait until every request of both runs (hits included) has its entry.
    const reader = new LedgerReader(redis, ns);
    const totals = async () => {
      const [u, c] = await Promise.all(['uncached', 'cached'].map((project) => reader.summary({ period: 'day', at: new Date(), scope: { project } })));
      return { u: u!, c: c! };
    };
    const deadline = Date.now() + 60_000;
    let t = await totals();
    while (Date.now() < deadline && (t.u.entries < without.ok || t.c.entries < withCache.ok)) {
      await new Promise((r) => setTimeout(r, 250));
      t = await totals();
    }
    const reduction = 1 - t.c.total.micros / Math.max(1, t.u.total.micros);
    const ledger = {
      requests: questions.length,
      'duplicate share': `${(duplicateShare * 100).toFixed(1)}%`,
      'uncached $ (ledger)': t.u.total.usd,
      'cached $ (ledger)': t.c.total.usd,
      'avoided $ (ledger)': t.c.avoided.usd,
      'cost reduction': `${(reduction * 100).toFixed(1)}%`,
      'hits served': withCache.hits,
      'ledger entries (uncached, cached)': `${t.u.entries}, ${t.c.entries}`,
      failed: without.failed + withCache.failed,
    };
    console.table([ledger]);

    // Hits under load: one cached question, asked over and over.
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: questions[0] }] });
    const gatewayPid = procs.find((p) => p.name === 'gateway')?.proc.pid;
    const rows: Row[] = [];
    for (const concurrency of CONCURRENCIES) {
      for (const [name, url, headers] of [
        ['portkey (plain proxy)', `http://127.0.0.1:${PORTS.portkey}/v1/chat/completions`, { authorization: 'Bearer stub-key', 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${stubUrl}/openai/v1` }],
        ['tollgate cache hits', `${gatewayUrl}/v1/chat/completions`, { authorization: `Bearer ${cached}`, 'cache-control': 'max-age=3600' }],
      ] as Array<[string, string, Record<string, string>]>) {
        process.stdout.write(`  ${name} at concurrency ${concurrency} for ${DURATION}s...\n`);
        const cpuBefore = cpuMs(gatewayPid);
        const r = await autocannon({ url, method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body, connections: concurrency, duration: DURATION });
        const served = Math.max(1, r['2xx'] + r.non2xx);
        rows.push({
          target: name,
          concurrency,
          'req/s': Math.round(r.requests.average),
          'p50 ms': r.latency.p50,
          'p99 ms': r.latency.p99,
          ok: r['2xx'],
          errors: r.non2xx + r.errors + r.timeouts,
          ...(name.startsWith('tollgate') && { 'gateway CPU µs/req': Math.round(((cpuMs(gatewayPid) - cpuBefore) * 1000) / served) }),
        });
      }
    }
    console.table(rows);

    mkdirSync(join(root, 'bench', 'results'), { recursive: true });
    writeFileSync(join(root, 'bench', 'results', 'cache.json'), JSON.stringify({ at: new Date().toISOString(), ledger, reduction, duplicate_share: duplicateShare, rows }, null, 2));
    const metReduction = Math.abs(reduction - duplicateShare) <= 0.01 && without.failed + withCache.failed === 0;
    if (!metReduction) process.exitCode = 1;
    const summary: SummaryRow[] = [
      {
        benchmark: 'cache',
        measure: `ledger cost reduction, ${questions.length} requests, ${(duplicateShare * 100).toFixed(1)}% repeats`,
        result: `${(reduction * 100).toFixed(1)}% (${t.u.total.usd} -> ${t.c.total.usd} USD)`,
        target: 'within 1 point of the duplicate share',
        met: metReduction,
      },
    ];
    for (const c of CONCURRENCIES) {
      const hit = rows.find((r) => r.concurrency === c && r.target.startsWith('tollgate'))!;
      const pk = rows.find((r) => r.concurrency === c && r.target.startsWith('portkey'))!;
      summary.push({
        benchmark: 'cache',
        measure: `concurrency ${c}: cache hits vs Portkey plain proxy`,
        result: `${hit['req/s']} vs ${pk['req/s']} req/s; p99 ${hit['p99 ms']} vs ${pk['p99 ms']} ms`,
        target: 'hits faster (req/s higher, p99 no worse)',
        met: hit['req/s'] > pk['req/s'] && hit['p99 ms'] <= pk['p99 ms'] && hit.errors === 0,
      });
    }
    return summary;
  } finally {
    for (const p of procs) p.proc.kill('SIGTERM');
    await Promise.all(procs.map((p) => new Promise((r) => (p.proc.exitCode !== null ? r(null) : p.proc.once('exit', r)))));
    await deleteByPrefix(redis, ns);
    await redis.quit();
  }
}
