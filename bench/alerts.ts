/**
 * `pnpm bench alerts`: the latency from the event whose cost crosses a budget threshold to the
 * alert on the alerts stream, while ~1,000 other usage events a second flow through the same
 * services. Runs the real services as separate processes on loopback Redis: two alerting
 * instances and, in the default `usage` mode, one cost-ledger, so a probe goes
 * usage.recorded -> ledger -> cost.recorded -> alerting -> alerts stream. `BENCH_ALERTS_FROM=cost`
 * publishes cost.recorded directly (the alerting service alone).
 *
 * Env: BENCH_ALERTS_FROM (usage|cost), BENCH_ALERTS_SECONDS (10), BENCH_ALERTS_RATE (1000 events/s),
 * BENCH_ALERTS_PROBES_PER_S (20), BENCH_ALERTS_INSTANCES (2), BENCH_ALERTS_WARMUP_S (2).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  alertingKeys,
  BudgetStore,
  busPartitionsFrom,
  createRedis,
  deleteByPrefix,
  EventBus,
  type EventData,
  type EventMeta,
  hashTagged,
  parseAlertEntry,
  PERIODS,
  type PeriodKeys,
  periodKeys,
} from '../packages/shared/src';

const FROM = (process.env.BENCH_ALERTS_FROM ?? 'usage') as 'usage' | 'cost';
const SECONDS = Number(process.env.BENCH_ALERTS_SECONDS ?? 10);
const RATE = Number(process.env.BENCH_ALERTS_RATE ?? 1_000);
const PROBES_PER_S = Number(process.env.BENCH_ALERTS_PROBES_PER_S ?? 20);
const INSTANCES = Number(process.env.BENCH_ALERTS_INSTANCES ?? 2);
/**
 * Background load before the first probe, as `pnpm bench gateway` warms up: a just-started
 * process's first ~0.3 s (JIT, first script loads) cost its first probes 50-100 ms (measured:
 * the five slowest probes of a run without warm-up were all in its first 0.25 s).
 */
const WARMUP_S = Number(process.env.BENCH_ALERTS_WARMUP_S ?? 2);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const TARGET_P99_MS = 50;
import type { SummaryRow } from './summary';

const root = join(__dirname, '..');
// The services run as deployed: the bundles `pnpm build` writes, on plain node.
const { build } = require('../scripts/build.js') as { build(options?: { only?: string[] }): Promise<unknown> };

type Item = { [T in 'usage.recorded' | 'cost.recorded']: { type: T; data: EventData<T>; meta: EventMeta } }['usage.recorded' | 'cost.recorded'];

function usage(i: number, project: string, user: string): Item {
  return {
    type: 'usage.recorded',
    data: {
      provider: 'openai',
      model: 'gpt-4o-mini',
      service: 'bench',
      operation: 'chat',
      units: { input_tokens: 200 + (i % 500), output_tokens: 50 + (i % 200) },
      usage_source: 'provider',
      request_id: `r${i}`,
      cached: false,
    },
    meta: { correlation_id: `c${i}`, user_id: user, project_id: project },
  };
}

/** What the ledger publishes: running totals for each scope and period. */
function cost(i: number, project: string, user: string, spent: number, keys: PeriodKeys): Item {
  return {
    type: 'cost.recorded',
    data: {
      entry_id: `e${i}`,
      usage_event_id: `u${i}`,
      amount_micros: 40,
      price_version: 'bench',
      provider: 'openai',
      model: 'gpt-4o-mini',
      service: 'bench',
      operation: 'chat',
      units: { input_tokens: 200, output_tokens: 50 },
      cached: false,
      occurred_at: new Date().toISOString(),
      totals: PERIODS.flatMap((period) => [
        { scope: 'global' as const, scope_id: 'all', period, period_key: keys[period], spent_micros: i * 40 },
        { scope: 'user' as const, scope_id: user, period, period_key: keys[period], spent_micros: spent },
        { scope: 'project' as const, scope_id: project, period, period_key: keys[period], spent_micros: spent },
      ]),
    },
    meta: { correlation_id: `c${i}`, user_id: user, project_id: project },
  };
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;

export async function run(): Promise<SummaryRow[]> {
  const host = new URL(REDIS_URL).hostname;
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host)) throw new Error(`bench alerts runs on loopback Redis only, not ${host}`);
  await build({ only: ['cost-ledger', 'alerting'] });
  const prefix = `bench-alerts-${randomUUID().slice(0, 8)}`;
  const ns = hashTagged(prefix);
  const redis = createRedis(REDIS_URL, { name: 'bench-alerts' });
  const reader = redis.duplicate();
  const publisher = new EventBus({ redis, prefix: ns, service: FROM === 'usage' ? 'bench' : 'cost-ledger', maxLen: 50_000, partitions: busPartitionsFrom() });
  const keys = alertingKeys(ns);
  const children: ChildProcess[] = [];
  const env = { ...process.env, TOLLGATE_PREFIX: prefix, LOG_LEVEL: 'warn', BUS_MAX_LEN: '50000' };
  const start = (service: string) =>
    children.push(spawn(process.execPath, [`services/${service}/dist/index.js`], { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] }));

  try {
    const probes = Math.max(1, Math.round(SECONDS * PROBES_PER_S));
    // Each probe gets a project of its own whose first priced call crosses 100% (50% and 80% are
    // inhibited by it): one alert per probe, whatever the price of the call.
    const budgets = new BudgetStore(redis, ns);
    for (let p = 0; p < probes; p++) await budgets.put('project', `probe-${p}`, { periods: [{ period: 'day', limit_micros: 1 }] });

    for (let i = 0; i < INSTANCES; i++) start('alerting');
    if (FROM === 'usage') start('cost-ledger');
    const groupsReady = async () => {
      for (const stream of publisher.streams) {
        const groups = (await redis.xinfo('GROUPS', stream).catch(() => [])) as unknown[][];
        const names = groups.map((g) => String(g[1]));
        if (!(names.includes('alerting') && (FROM === 'cost' || names.includes('cost-ledger')))) return false;
      }
      return true;
    };
    const deadline = Date.now() + 60_000;
    while (!(await groupsReady())) {
      if (Date.now() > deadline) throw new Error('the services did not start within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 500)); // let every instance join and settle

    const sentAt = new Map<string, number>();
    const costAt = new Map<string, number>();
    const latencies: number[] = [];
    /** [latency, probe number]: where in the run the slowest ones fell. */
    const slowest: Array<[number, number]> = [];
    const split: Array<[toCost: number, toAlert: number]> = [];
    let reading = true;
    let cursor = '$';
    const follow = (async () => {
      while (reading) {
        const res = (await reader.xread('COUNT', 100, 'BLOCK', 200, 'STREAMS', keys.alertsStream, cursor).catch(() => null)) as
          | Array<[string, Array<[string, string[]]>]>
          | null;
        const now = performance.now();
        for (const [, entries] of res ?? []) {
          for (const [id, fields] of entries) {
            cursor = id;
            const entry = parseAlertEntry(id, fields);
            if (entry?.alert.kind !== 'cost' || entry.alert.state !== 'firing') continue;
            const t0 = sentAt.get(entry.alert.scope_id);
            if (t0 === undefined) continue;
            latencies.push(now - t0);
            slowest.push([now - t0, Number(entry.alert.scope_id.slice('probe-'.length))]);
            const t1 = costAt.get(entry.alert.scope_id);
            if (t1 !== undefined) split.push([t1 - t0, now - t1]);
          }
        }
      }
    })();

    // In usage mode, when the ledger's cost.recorded for each probe appears: splits the latency in two.
    // One blocking reader per partition: on a cluster one XREAD cannot span their slots.
    const busReaders = publisher.streams.map(() => redis.duplicate());
    const followBus = Promise.all(publisher.streams.map(async (stream, i) => {
      if (FROM !== 'usage') return;
      const busReader = busReaders[i]!;
      let busCursor = '$';
      while (reading) {
        const res = (await busReader.xread('COUNT', 500, 'BLOCK', 200, 'STREAMS', stream, busCursor).catch(() => null)) as
          | Array<[string, Array<[string, string[]]>]>
          | null;
        const now = performance.now();
        for (const [, entries] of res ?? []) {
          for (const [id, fields] of entries) {
            busCursor = id;
            if (fields[1] !== 'cost.recorded') continue;
            const project = /"project_id":"(probe-\d+)"/.exec(fields[3] ?? '')?.[1];
            if (project && !costAt.has(project)) costAt.set(project, now);
          }
        }
      }
    }));

    const keysNow = periodKeys(Date.now());
    const warmFrom = performance.now();
    const began = warmFrom + WARMUP_S * 1000;
    let sent = 0;
    let probe = 0;
    while (performance.now() - began < SECONDS * 1000) {
      const elapsed = (performance.now() - began) / 1000;
      const loadElapsed = (performance.now() - warmFrom) / 1000;
      const due = Math.floor(loadElapsed * RATE) - sent;
      if (due > 0) {
        const batch: Item[] = [];
        for (let j = 0; j < due; j++, sent++) {
          const project = `bg-${sent % 50}`;
          const user = `u${sent % 200}`;
          batch.push(FROM === 'usage' ? usage(sent, project, user) : cost(sent, project, user, Math.ceil(sent / 50) * 40, keysNow));
        }
        await publisher.publishMany(batch);
      }
      if (probe < probes && elapsed >= 0 && elapsed >= probe / PROBES_PER_S) {
        const project = `probe-${probe}`;
        const item = FROM === 'usage' ? usage(1_000_000 + probe, project, 'prober') : cost(1_000_000 + probe, project, 'prober', 40, keysNow);
        sentAt.set(project, performance.now());
        await publisher.publishMany([item]);
        probe++;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const loadSeconds = (performance.now() - warmFrom) / 1000;
    const waitUntil = Date.now() + 5_000;
    while (latencies.length < probe && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 50));
    reading = false;
    await Promise.all([follow, followBus]);
    for (const r of busReaders) r.disconnect();

    const sorted = [...latencies].sort((a, b) => a - b);
    const p99 = percentile(sorted, 99);
    const worst = slowest.sort((a, b) => b[0] - a[0]).slice(0, 5);
    console.log(`slowest probes (ms at s into the run): ${worst.map(([ms, p]) => `${ms.toFixed(1)} at ${(p / PROBES_PER_S).toFixed(2)} s`).join(', ')}`);
    console.table([
      {
        from: `${FROM}.recorded`,
        'alerting instances': INSTANCES,
        'background events/s': Math.round(sent / loadSeconds),
        probes: probe,
        alerts: latencies.length,
        'p50 ms': percentile(sorted, 50).toFixed(1),
        'p90 ms': percentile(sorted, 90).toFixed(1),
        'p99 ms': p99.toFixed(1),
        'max ms': (sorted[sorted.length - 1] ?? NaN).toFixed(1),
        [`p99 < ${TARGET_P99_MS} ms`]: p99 < TARGET_P99_MS && latencies.length === probe,
      },
    ]);
    if (split.length > 0) {
      const toCost = split.map(([a]) => a).sort((a, b) => a - b);
      const toAlert = split.map(([, b]) => b).sort((a, b) => a - b);
      console.table([
        { leg: 'usage.recorded -> cost.recorded (ledger)', 'p50 ms': percentile(toCost, 50).toFixed(1), 'p99 ms': percentile(toCost, 99).toFixed(1) },
        { leg: 'cost.recorded -> alerts stream (alerting)', 'p50 ms': percentile(toAlert, 50).toFixed(1), 'p99 ms': percentile(toAlert, 99).toFixed(1) },
      ]);
    }
    if (latencies.length !== probe) {
      console.error(`${probe - latencies.length} probe(s) raised no alert within 5 s`);
      process.exitCode = 1;
    }
    return [
      {
        benchmark: 'alerts',
        measure: `crossing -> alert p50 / p99 (${Math.round(sent / loadSeconds)} events/s background, ${WARMUP_S} s warm-up)`,
        result: `${percentile(sorted, 50).toFixed(1)} / ${p99.toFixed(1)} ms`,
        target: `p99 < ${TARGET_P99_MS} ms`,
        met: p99 < TARGET_P99_MS && latencies.length === probe,
      },
      { benchmark: 'alerts', measure: 'probes alerted', result: `${latencies.length} of ${probe}`, target: 'all', met: latencies.length === probe },
    ];
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    reader.disconnect();
    await deleteByPrefix(redis, ns);
    await redis.quit();
  }
}
