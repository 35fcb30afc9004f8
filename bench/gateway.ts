/**
 * `pnpm bench gateway`: the OpenAI-compatible chat endpoint under load, side by side on the same
 * stub upstream: the stub alone, the Portkey gateway proxying to it, and Tollgate's full path
 * (gateway -> queue -> chat worker -> stub, with the ledger and alerting running). Reports req/s,
 * p50 and p99 at two concurrencies, the Tollgate/Portkey ratios, every service's memory idle and
 * under load, and whether every successful Tollgate request is in the ledger.
 * Loopback only; every run is bounded in time.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { masterShares, sampleMasters } from './cluster-share';
import { busBacklog } from './bus-backlog';
import { keyFamilies } from './key-families';
import { ApiKeyStore, BudgetStore, busPartitions, busPartitionsFrom, createRedis, deleteByPrefix, hashTagged, LedgerReader } from '../packages/shared/src';

import type { SummaryRow } from './summary';

const root = join(__dirname, '..');
const { build } = require('../scripts/build.js') as { build(options?: { only?: string[] }): Promise<unknown> };
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DURATION = Number(process.env.BENCH_DURATION_S ?? 10);
/** Load on each target before anything is measured, so JIT warm-up is not charged to requests. */
const WARMUP = Number(process.env.BENCH_WARMUP_S ?? 3);
const CONCURRENCIES = (process.env.BENCH_CONCURRENCY ?? '20,100').split(',').map(Number);
const TENANTS = Math.max(1, Number(process.env.BENCH_TENANTS ?? 1));
const FAMILY_SECONDS = Number(process.env.BENCH_KEY_FAMILIES ?? 0);
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PORTS = { stub: 4110, portkey: 8797, gateway: 8190 };
/**
 * Streamed chat (SSE, with the usage chunk), as the OpenAI SDK asks for it. Unset: every target
 * plain, plus Tollgate streamed (`tollgate streamed`: the Portkey peer fails every streamed request
 * on Node here, so streamed chat is compared with Tollgate's plain path). BENCH_STREAM=1: every
 * target streamed; BENCH_STREAM=0: no streamed run.
 */
const STREAM = process.env.BENCH_STREAM === '1';
const bodyOf = (stream: boolean) =>
  JSON.stringify({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Summarise the benefits of circuit breakers.' }],
    ...(stream && { stream: true, stream_options: { include_usage: true } }),
  });
const BODY = bodyOf(STREAM);
/** Issue 23's targets: Tollgate / Portkey req/s by concurrency, and the rest below. */
const RATIO_TARGETS: Record<number, number> = { 20: 0.8, 100: 1.0 };
const CPU_TARGET_US = 1_300;
const STREAM_RATIO_TARGET = 0.9;

export interface Proc {
  name: string;
  proc: ChildProcess;
}

export function start(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const childNodeOptions = process.env.BENCH_CHILD_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_CHILD_NODE_OPTIONS } : {};
  const proc = spawn(command, args, { cwd: root, env: { ...process.env, ...env, ...childNodeOptions }, stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr?.on('data', (d: Buffer) => {
    const line = d.toString().trim();
    if (line && !/ExperimentalWarning|--trace-warnings/.test(line)) process.stderr.write(`  [${name}] ${line.slice(0, 300)}\n`);
  });
  return { name, proc };
}

export async function waitHttp(url: string, timeoutMs = 30_000, init?: RequestInit): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url, init);
      if (r.status < 500) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not come up`);
}

/** A /proc file of a process, or undefined once it is gone. */
function procFile(pid: number | undefined, file: string): string | undefined {
  if (!pid) return undefined;
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof": extra node flags for the measured processes. */
export function benchNodeArgs(): string[] {
  return process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
}

/** CPU time (user + system, ms) a process has used so far. */
export function cpuMs(pid: number | undefined): number {
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const rest = procFile(pid, 'stat')?.split(') ')[1]?.split(' ');
  return rest ? (Number(rest[11]) + Number(rest[12])) * 10 : 0; // USER_HZ is 100 on Linux
}

/** Write system calls (socket and file writes) a process has made so far. */
function writeCalls(pid: number | undefined): number {
  return Number(/syscw:\s+(\d+)/.exec(procFile(pid, 'io') ?? '')?.[1] ?? 0);
}

/** Resident memory of a process, MB. */
export function rssMb(pid: number | undefined): number {
  return Math.round(Number(/VmRSS:\s+(\d+) kB/.exec(procFile(pid, 'status') ?? '')?.[1] ?? 0) / 102.4) / 10;
}

/**
 * Memory of each idle process: 2 s after start (start-up leftovers still in), and after 30 s
 * without traffic, by when V8 has given back what start-up used (it does so only after some
 * idle time, at about 20 s here). The second is what an idle service holds.
 */
async function idleMemory(procs: Proc[]): Promise<{ early: Record<string, number>; settled: Record<string, number> }> {
  const sample = () => Object.fromEntries(procs.map((p) => [p.name, rssMb(p.proc.pid)]));
  await new Promise((r) => setTimeout(r, 2_000));
  const early = sample();
  process.stdout.write('  30 s idle, for idle memory...\n');
  await new Promise((r) => setTimeout(r, 28_000));
  return { early, settled: sample() };
}

interface Row {
  target: string;
  concurrency: number;
  'req/s': number;
  'mean ms': number;
  'p50 ms': number;
  'p99 ms': number;
  ok: number;
  errors: number;
  /** Most Redis connections the gateway held during the run (Tollgate only). */
  'gateway redis conns'?: number;
}

async function load(target: string, url: string, headers: Record<string, string> | Array<Record<string, string>>, concurrency: number, duration = DURATION, body = BODY): Promise<Row> {
  const each = Array.isArray(headers) ? headers : [headers];
  const result = await autocannon({
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...each[0] },
    body,
    connections: concurrency,
    duration,
    // Several tenants: every connection goes round their keys, one request each.
    ...(each.length > 1 && { requests: each.map((h) => ({ method: 'POST' as const, headers: { 'content-type': 'application/json', ...h }, body })) }),
  });
  return {
    target,
    concurrency,
    'req/s': Math.round(result.requests.average),
    'mean ms': Number(result.latency.mean.toFixed(2)),
    'p50 ms': result.latency.p50,
    'p99 ms': result.latency.p99,
    ok: result['2xx'],
    errors: result.non2xx + result.errors + result.timeouts,
  };
}

/**
 * Waits until every consumer group on the bus has read and acked everything (at most `maxMs`), so
 * a run's CPU includes the work its requests left behind and none of it lands in the next run's.
 */
async function settle(redis: ReturnType<typeof createRedis>, ns: string, maxMs = 30_000): Promise<boolean> {
  const streams = busPartitions(ns, busPartitionsFrom()).map((p) => p.stream);
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    if ((await busBacklog(redis, streams)) === 0) return true;
    await delay(100);
  }
  return false;
}

export async function run(): Promise<SummaryRow[]> {
  const prefix = `bench-gw-${randomUUID().slice(0, 8)}`;
  const ns = hashTagged(prefix);
  const redis = createRedis(REDIS_URL, { name: 'bench-gateway' });
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
    await build({ only: ['stub-llm', 'gateway', 'chat-workflow', 'cost-ledger', 'alerting', 'analytics', 'journeys'] });
    procs.push(start('stub', process.execPath, ['packages/stub-llm/dist/index.js'], env));
    procs.push(start('portkey', process.execPath, ['node_modules/@portkey-ai/gateway/build/start-server.js', `--port=${PORTS.portkey}`, '--headless']));
    for (const service of ['gateway', 'chat-workflow', 'cost-ledger', 'alerting', 'analytics', 'journeys']) {
      const profile = [...(process.env.BENCH_CPU_PROF ? [`--cpu-prof`, `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []), ...benchNodeArgs()];
      procs.push(start(service, process.execPath, [...profile, `services/${service}/dist/index.js`], env));
    }
    const stubUrl = `http://127.0.0.1:${PORTS.stub}`;
    const gatewayUrl = `http://127.0.0.1:${PORTS.gateway}`;
    await waitHttp(`${stubUrl}/healthz`);
    await waitHttp(`http://127.0.0.1:${PORTS.portkey}/`);
    await waitHttp(`${gatewayUrl}/readyz`);
    const { key } = await new ApiKeyStore(redis, ns).create({ name: 'bench', user_id: 'bench', project_id: 'bench', scopes: ['chat'] });
    // BENCH_TENANTS=N: requests go round N users, each in a project of its own (the cluster's
    // per-tenant spread is measured with 100).
    const tenantKeys = [key];
    for (let i = 1; i < TENANTS; i++) {
      tenantKeys.push((await new ApiKeyStore(redis, ns).create({ name: `bench-${i}`, user_id: `bench-u${i}`, project_id: `bench-p${i}`, scopes: ['chat'] })).key);
    }
    if (TENANTS > 1) console.log(`  ${TENANTS} tenants (a user and a project each); every connection goes round their keys`);
    // BENCH_HARD_BUDGET_MICROS: a hard day budget on the bench project, so every request takes the
    // hold path (held at admission, settled by the ledger); set it high enough that none is refused.
    if (process.env.BENCH_HARD_BUDGET_MICROS) {
      const limit = Number(process.env.BENCH_HARD_BUDGET_MICROS);
      await new BudgetStore(redis, ns).put('project', 'bench', { periods: [{ period: 'day', limit_micros: limit, mode: 'hard' }] });
      console.log(`  the bench project has a hard day budget of ${limit} micros: every request is held and settled`);
    }
    const idle = await idleMemory(procs);

    const tollgateHeaders = tenantKeys.map((k) => ({ authorization: `Bearer ${k}` }));
    const targets: Array<[string, string, Record<string, string> | Array<Record<string, string>>, string?]> = [
      ['stub alone', `${stubUrl}/openai/v1/chat/completions`, { authorization: 'Bearer stub-key' }],
      ['portkey', `http://127.0.0.1:${PORTS.portkey}/v1/chat/completions`, {
        authorization: 'Bearer stub-key',
        'x-portkey-provider': 'openai',
        'x-portkey-custom-host': `${stubUrl}/openai/v1`,
      }],
      ['tollgate', `${gatewayUrl}/v1/chat/completions`, tollgateHeaders],
      ...(process.env.BENCH_STREAM === undefined ? [['tollgate streamed', `${gatewayUrl}/v1/chat/completions`, tollgateHeaders, bodyOf(true)] as [string, string, Array<Record<string, string>>, string]] : []),
    ];
    const only = process.env.BENCH_TARGETS?.split(',');
    if (only) targets.splice(0, targets.length, ...targets.filter(([n]) => only.includes(n.split(' ')[0]!)));
    const rows: Row[] = [];
    const peak: Record<string, number> = {};
    // Where the CPU goes: each process's CPU time per request served, Redis included when local.
    const redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1] ?? 0);
    const watched = [...procs.map((p) => ({ name: p.name, pid: p.proc.pid })), ...(existsSync(`/proc/${redisPid}`) ? [{ name: 'redis', pid: redisPid }] : [])];
    const cpu: Array<Record<string, string | number>> = [];
    // Each write that wakes another process is a context switch on both sides: on a small or
    // virtualised machine they cost more than the work they carry.
    const writes: Array<Record<string, string | number>> = [];
    const warmups: Row[] = [];
    if (WARMUP > 0) {
      for (const [name, url, headers, body] of targets) {
        process.stdout.write(`  ${name}: warm-up at concurrency ${CONCURRENCIES[0]} for ${WARMUP}s (not measured)...\n`);
        warmups.push(await load(name, url, headers, CONCURRENCIES[0]!, WARMUP, body));
        if (name.startsWith('tollgate')) await settle(redis, ns);
      }
    }
    const sharesBefore = await sampleMasters(redis, ns);
    let familyTable: Awaited<ReturnType<typeof keyFamilies>> | undefined;
    for (const concurrency of CONCURRENCIES) {
      for (const [name, url, headers, body] of targets) {
        process.stdout.write(`  ${name} at concurrency ${concurrency} for ${DURATION}s...\n`);
        let gatewayConnections = 0;
        const sampler = setInterval(() => {
          for (const p of procs) peak[p.name] = Math.max(peak[p.name] ?? 0, rssMb(p.proc.pid));
          // Redis connections the gateway holds (its own are named gateway*).
          void redis.client('LIST').then((list) => {
            const n = String(list).split('\n').filter((l) => / name=gateway/.test(l)).length;
            gatewayConnections = Math.max(gatewayConnections, n);
          }).catch(() => undefined);
        }, 500);
        const before = watched.map((w) => cpuMs(w.pid));
        const writesBefore = watched.map((w) => writeCalls(w.pid));
        const families = name === 'tollgate' && FAMILY_SECONDS > 0 && !familyTable ? delay(2_000).then(() => keyFamilies(redis, ns, FAMILY_SECONDS)) : undefined;
        const row = await load(name, url, headers, concurrency, DURATION, body);
        // The ledger, alerting, analytics and journeys may still be working off this run's events.
        if (name.startsWith('tollgate') && !(await settle(redis, ns))) console.log('  (the bus had not drained 30 s after the run)');
        if (families) familyTable = await families;
        clearInterval(sampler);
        if (name.startsWith('tollgate')) row['gateway redis conns'] = gatewayConnections;
        rows.push(row);
        const used = watched.map((w, i) => [w.name, cpuMs(w.pid) - before[i]!] as const).filter(([, ms]) => ms > 0);
        const served = Math.max(1, row.ok + row.errors);
        cpu.push({
          target: name,
          concurrency,
          ...Object.fromEntries(used.map(([n, ms]) => [n, Math.round((ms * 1000) / served)])),
        });
        const wrote = watched.map((w, i) => [w.name, writeCalls(w.pid) - writesBefore[i]!] as const).filter(([, n]) => n > 0);
        writes.push({ target: name, concurrency, ...Object.fromEntries(wrote.map(([n, c]) => [n, Number((c / served).toFixed(1))])) });
      }
    }
    console.table(rows);
    if (familyTable) {
      console.log(`Redis commands by key family, ${FAMILY_SECONDS} s of MONITOR in the first Tollgate run (scripts' own commands included):`);
      console.table(familyTable);
    }
    if (sharesBefore.length > 0) {
      // Includes the Portkey runs' share of nothing: Portkey does not use Redis.
      console.log(`per cluster master: share of the commands sent during the measured runs, and of the bench's keys (target: none above 45%):`);
      console.table(masterShares(sharesBefore, await sampleMasters(redis, ns)));
    }
    console.log('CPU µs per request, by process (autocannon itself not counted):');
    console.table(cpu);
    console.log('write system calls per request, by process:');
    console.table(writes);

    const ratios = CONCURRENCIES.flatMap((c) => {
      const t = rows.find((r) => r.target === 'tollgate' && r.concurrency === c);
      const p = rows.find((r) => r.target === 'portkey' && r.concurrency === c);
      if (!t || !p) return [];
      return {
        concurrency: c,
        'tollgate/portkey req/s': Number((t['req/s'] / Math.max(1, p['req/s'])).toFixed(2)),
        'tollgate/portkey p99': Number((t['p99 ms'] / Math.max(1, p['p99 ms'])).toFixed(2)),
      };
    });
    console.table(ratios);
    console.table(
      procs.map((p) => ({
        process: p.name,
        'RSS 2 s after start MB': idle.early[p.name],
        'idle RSS MB': idle.settled[p.name],
        'peak RSS MB': peak[p.name] ?? 0,
      })),
    );

    // Every Tollgate request that got a 2xx must have its cost in the ledger. Requests still in
    // flight when a run's clock stopped were served and billed but not counted by the load
    // generator, so the ledger may hold up to one per connection more, never fewer.
    const tollgateRuns = targets.filter(([n]) => n.startsWith('tollgate')).length;
    const served = [...warmups, ...rows].filter((r) => r.target.startsWith('tollgate')).reduce((s, r) => s + r.ok, 0);
    const inFlight = tollgateRuns * (CONCURRENCIES.reduce((s, c) => s + c, 0) + (warmups.length > 0 ? CONCURRENCIES[0]! : 0));
    const deadline = Date.now() + 60_000;
    let entries = 0;
    while (Date.now() < deadline) {
      entries = await new LedgerReader(redis, ns).count();
      if (entries >= served) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const billed = entries >= served && entries <= served + inFlight;
    const ledger = { 'tollgate 2xx': served, 'ledger entries': entries, 'in flight at stops (max)': inFlight, 'every request billed': billed };
    console.table([ledger]);
    mkdirSync(join(root, 'bench', 'results'), { recursive: true });
    writeFileSync(join(root, 'bench', 'results', 'gateway.json'), JSON.stringify({ at: new Date().toISOString(), duration_s: DURATION, rows, ratios, cpu_us_per_request: cpu, writes_per_request: writes, idle_rss_mb: idle.settled, rss_2s_after_start_mb: idle.early, peak_rss_mb: peak, ledger }, null, 2));
    if (!billed) process.exitCode = 1;
    const at = (target: string, c: number) => rows.find((x) => x.target === target && x.concurrency === c);
    const summary: SummaryRow[] = ratios.map((r) => {
      const t = at('tollgate', r.concurrency)!;
      const p = at('portkey', r.concurrency)!;
      const goal = RATIO_TARGETS[r.concurrency];
      const result = `${t['req/s']} vs ${p['req/s']} req/s (${r['tollgate/portkey req/s']}x); p99 ${t['p99 ms']} vs ${p['p99 ms']} ms`;
      if (goal === undefined) {
        // Other concurrencies (1: one request at a time): the time each adds to the upstream's answer.
        const stub = at('stub alone', r.concurrency);
        const added = (x: Row) => (stub ? `${(x['mean ms'] - stub['mean ms']).toFixed(2)} / ${Math.max(0, x['p99 ms'] - stub['p99 ms'])}` : `${x['mean ms']} / ${x['p99 ms']}`);
        return {
          benchmark: 'gateway',
          measure: `concurrency ${r.concurrency}: added latency over the stub alone, mean / p99 ms, Tollgate vs Portkey`,
          result: `${added(t)} vs ${added(p)} ms (${result})`,
          target: "<= Portkey's",
          met: t['mean ms'] <= p['mean ms'] && t['p99 ms'] <= p['p99 ms'],
        };
      }
      return {
        benchmark: 'gateway',
        measure: `concurrency ${r.concurrency}: req/s and p99, Tollgate vs Portkey`,
        result,
        target: `>= ${goal.toFixed(1)}x req/s, p99 no worse`,
        met: r['tollgate/portkey req/s'] >= goal && t['p99 ms'] <= p['p99 ms'],
      };
    });
    for (const c of cpu.filter((x) => x.target === 'tollgate')) {
      // Every Tollgate process and Redis; the stub is the upstream of both gateways.
      const total = Object.entries(c).filter(([k]) => !['target', 'concurrency', 'stub', 'portkey'].includes(k)).reduce((s, [, v]) => s + Number(v), 0);
      const peer = cpu.find((x) => x.target === 'portkey' && x.concurrency === c.concurrency)?.portkey;
      summary.push({
        benchmark: 'gateway',
        measure: `concurrency ${c.concurrency}: CPU per answered request, every Tollgate process and Redis`,
        result: `${(total / 1000).toFixed(2)} ms${peer !== undefined ? ` (Portkey ${(Number(peer) / 1000).toFixed(2)} ms)` : ''}`,
        target: `<= ${(CPU_TARGET_US / 1000).toFixed(1)} ms`,
        met: total <= CPU_TARGET_US,
      });
    }
    for (const c of CONCURRENCIES) {
      const plain = at('tollgate', c);
      const streamed = at('tollgate streamed', c);
      if (!plain || !streamed) continue;
      const ratio = streamed['req/s'] / Math.max(1, plain['req/s']);
      summary.push(
        {
          benchmark: 'gateway',
          measure: `concurrency ${c}: streamed / plain chat req/s (Portkey fails streamed requests here)`,
          result: `${streamed['req/s']} / ${plain['req/s']} (${ratio.toFixed(2)}x)`,
          target: `>= ${STREAM_RATIO_TARGET}`,
          met: ratio >= STREAM_RATIO_TARGET,
        },
        {
          benchmark: 'gateway',
          measure: `concurrency ${c}: Redis connections the gateway holds, streamed vs plain`,
          result: `${streamed['gateway redis conns']} vs ${plain['gateway redis conns']}`,
          target: 'at most plain + 1 (one reading connection, none per open stream)',
          met: (streamed['gateway redis conns'] ?? Infinity) <= (plain['gateway redis conns'] ?? 0) + 1,
        },
      );
    }
    const services = procs.filter((p) => !['stub', 'portkey'].includes(p.name));
    summary.push(
      {
        benchmark: 'gateway',
        measure: 'idle RSS after 30 s, per service',
        result: services.map((p) => `${p.name} ${idle.settled[p.name]}`).join(', ') + ' MB',
        target: '< 80 MB each',
        met: services.every((p) => (idle.settled[p.name] ?? Infinity) < 80),
      },
      ...cpu
        .filter((c) => c.target === 'tollgate' && c.analytics !== undefined)
        .map((c) => ({
          benchmark: 'gateway',
          measure: `concurrency ${c.concurrency}: analytics CPU per request`,
          result: `${c.analytics} µs`,
          target: '<= 100 µs',
          met: Number(c.analytics) <= 100,
        })),
      { benchmark: 'gateway', measure: 'every 2xx in the ledger', result: `${served} answered, ${entries} entries`, target: 'all', met: billed },
    );
    return summary;
  } finally {
    for (const p of procs) p.proc.kill('SIGTERM');
    await Promise.all(procs.map((p) => new Promise((r) => (p.proc.exitCode !== null ? r(null) : p.proc.once('exit', r)))));
    await deleteByPrefix(redis, ns);
    await redis.quit();
  }
}
