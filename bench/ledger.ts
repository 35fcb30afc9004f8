/**
 * `pnpm bench ledger`: usage events through the real bus and the real cost-ledger service (two
 * instances, separate processes) on real Redis; prints sustained events/s and whether the final
 * totals are exact to the micro-dollar.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import {
  busPartitionsFrom,
  createRedis,
  EventBus,
  hashTagged,
  LedgerReader,
  ledgerKeys,
  loadPriceTable,
  price,
  type UsageUnits, deleteByPrefix } from '../packages/shared/src';

const EVENTS = Number(process.env.BENCH_LEDGER_EVENTS ?? 100_000);
const INSTANCES = Number(process.env.BENCH_LEDGER_INSTANCES ?? 2);
// Projects the events are spread over (users: ten times as many); a cluster's shares need many.
const TENANTS = Number(process.env.BENCH_TENANTS ?? 5);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
import { benchNodeArgs } from './gateway';
import { masterShares, sampleMasters } from './cluster-share';
import type { SummaryRow } from './summary';

const root = join(__dirname, '..');
// The services run as deployed: the bundles `pnpm build` writes, on plain node.
const { build } = require('../scripts/build.js') as { build(options?: { only?: string[] }): Promise<unknown> };

const MODELS: Array<[string, string, (i: number) => UsageUnits]> = [
  ['openai', 'gpt-4o-mini', (i) => ({ input_tokens: 100 + (i % 1000), cached_input_tokens: i % 50, output_tokens: 20 + (i % 300) })],
  ['gemini', 'gemini-2.0-flash', (i) => ({ input_tokens: 1_000 + (i % 5000), output_tokens: 333 + (i % 97) })],
  ['deepseek', 'deepseek-chat', (i) => ({ input_tokens: 77 * (i % 13), output_tokens: 5 + (i % 11) })],
  ['deepseek', 'deepseek-vl2', () => ({ images: 1 })],
];

export async function run(): Promise<SummaryRow[]> {
  await build({ only: ['cost-ledger'] });
  const prefix = `bench-ledger-${randomUUID().slice(0, 8)}`;
  const ns = hashTagged(prefix);
  const redis = createRedis(REDIS_URL, { name: 'bench-ledger' });
  const table = loadPriceTable();
  const children: ChildProcess[] = [];
  try {
    const publisher = new EventBus({ redis, prefix: ns, service: 'bench', maxLen: EVENTS * 3, partitions: busPartitionsFrom() });

    let expected = 0;
    const started = Date.now();
    const BATCH = 1_000;
    for (let i = 0; i < EVENTS; i += BATCH) {
      const items = [];
      for (let j = i; j < Math.min(EVENTS, i + BATCH); j++) {
        const [provider, model, units] = MODELS[j % MODELS.length]!;
        const data = {
          provider, model, service: 'bench', operation: units(j).images ? 'vision' : 'chat', units: units(j),
          usage_source: 'provider' as const, request_id: `r${j}`, cached: false,
        };
        expected += price({ provider, model, units: data.units }, { table }).amount_micros;
        items.push({ type: 'usage.recorded' as const, data, meta: { correlation_id: `c${j}`, user_id: `u${j % (TENANTS * 10)}`, project_id: `p${j % TENANTS}` } });
      }
      await publisher.publishMany(items);
    }
    const published = Date.now();
    const sharesBefore = await sampleMasters(redis, ns);
    // The ledger starts on a full backlog, so what is timed is the ledger alone, not the publisher
    // sharing its two cores; its consumer group starts at the stream's beginning.
    for (let i = 0; i < INSTANCES; i++) {
      children.push(
        spawn(process.execPath, [...benchNodeArgs(), 'services/cost-ledger/dist/index.js'], {
          cwd: root,
          env: { ...process.env, TOLLGATE_PREFIX: prefix, LOG_LEVEL: 'warn', BUS_MAX_LEN: String(EVENTS * 3) },
          stdio: ['ignore', 'inherit', 'inherit'],
        }),
      );
    }
    const k = ledgerKeys(ns);
    const reader = new LedgerReader(redis, ns);
    while ((await reader.count()) === 0) await new Promise((r) => setTimeout(r, 5));
    const firstEntry = Date.now();
    let last = 0;
    let lastPrint = Date.now();
    for (;;) {
      const count = await reader.count();
      if (Date.now() - lastPrint >= 2_000) {
        process.stdout.write(`  ${count.toLocaleString()} / ${EVENTS.toLocaleString()} entries\n`);
        lastPrint = Date.now();
      }
      // Done when every entry is written and added to the running totals (none pending between steps).
      if (count >= EVENTS && (await reader.pendingCount()) === 0) break;
      if (count === last && Date.now() - firstEntry > 300_000) throw new Error(`stalled at ${count} entries`);
      last = count;
      await new Promise((r) => setTimeout(r, 20));
    }
    const done = Date.now();
    const day = new Date().toISOString().slice(0, 10);
    const total = Number((await redis.hget(k.day(day), 'total')) ?? 0);
    const seconds = (done - firstEntry) / 1000;
    console.table([
      {
        events: EVENTS,
        instances: INSTANCES,
        'publish events/s': Math.round(EVENTS / ((published - started) / 1000)),
        'ledger s': seconds.toFixed(2),
        'ledger events/s': Math.round(EVENTS / seconds),
        'expected micros': expected,
        'ledger micros': total,
        exact: total === expected,
      },
    ]);
    if (sharesBefore.length > 0) {
      console.log(`per cluster master: share of the commands sent while the ledger drained, and of the keys (${TENANTS} projects; target: none above 45% with 100):`);
      console.table(masterShares(sharesBefore, await sampleMasters(redis, ns)));
    }
    if (total !== expected) process.exitCode = 1;
    const rate = Math.round(EVENTS / seconds);
    return [
      { benchmark: 'ledger', measure: `events/s (${EVENTS.toLocaleString()} events, ${INSTANCES} instances)`, result: rate.toLocaleString(), target: '>= 50,000', met: rate >= 50_000 },
      { benchmark: 'ledger', measure: 'totals exact to the micro-dollar', result: `${total} of ${expected} micros`, target: 'equal', met: total === expected },
    ];
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    await deleteByPrefix(redis, ns);
    await redis.quit();
  }
}
