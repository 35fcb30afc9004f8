/**
 * `pnpm bench flags`: evaluations per second and the latency of one evaluation, in a service's
 * FlagSnapshot loaded from Redis with a realistic flag set (the product's flags plus 200 others
 * with constraints and segments). Each evaluation is timed alone with hrtime (the ~50 ns the
 * clock reads cost are included); throughput comes from untimed loops. The Redis commands the
 * snapshot's connection sends during the loops are counted: the evaluation path must send none.
 *
 * Env: BENCH_FLAGS_EVALS (200000 per flag).
 */
import { randomUUID } from 'node:crypto';
import {
  busPartitionsFrom,
  createRedis,
  deleteByPrefix,
  type Feature,
  featureSchema,
  FlagSnapshot,
  FlagStore,
  hashTagged,
  importEdit,
  PRODUCT_FLAGS,
  type Segment,
} from '../packages/shared/src';
import type { SummaryRow } from './summary';

const EVALS = Number(process.env.BENCH_FLAGS_EVALS ?? 200_000);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const TARGET_P99_US = 10;

function flagSet(): { features: Feature[]; segments: Segment[] } {
  const segments: Segment[] = [
    { id: 1, constraints: [{ contextName: 'projectId', operator: 'IN', values: Array.from({ length: 50 }, (_, i) => `proj-${i}`), inverted: false, caseInsensitive: false }] },
  ];
  const features: Feature[] = [
    featureSchema.parse({ name: PRODUCT_FLAGS.visionHighKill, type: 'kill-switch', enabled: true, strategies: [{ name: 'default' }] }),
    featureSchema.parse({
      name: PRODUCT_FLAGS.chatProviderExperiment,
      type: 'experiment',
      enabled: true,
      strategies: [{ name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: PRODUCT_FLAGS.chatProviderExperiment } }],
      variants: [
        { name: 'control', weight: 500, stickiness: 'default' },
        { name: 'openai', weight: 300, stickiness: 'default', payload: { type: 'json', value: '{"chain":["openai:gpt-4o-mini"]}' } },
        { name: 'deepseek', weight: 200, stickiness: 'default', payload: { type: 'json', value: '{"model":"deepseek-chat"}' } },
      ],
    }),
    featureSchema.parse({
      name: 'bench.targeted',
      type: 'release',
      enabled: true,
      strategies: [
        {
          name: 'flexibleRollout',
          parameters: { rollout: '50', stickiness: 'default', groupId: 'bench.targeted' },
          constraints: [
            { contextName: 'appVersion', operator: 'SEMVER_GTE', value: '2.0.0' },
            { contextName: 'remoteAddress', operator: 'IN_CIDR', values: ['10.0.0.0/8', '192.168.0.0/16'] },
            { contextName: 'plan', operator: 'STR_STARTS_WITH', values: ['pro', 'ent'], caseInsensitive: true },
          ],
          segments: [1],
        },
      ],
    }),
  ];
  for (let i = 0; i < 200; i++) {
    features.push(
      featureSchema.parse({
        name: `bench.filler.${i}`,
        enabled: i % 3 !== 0,
        strategies: [{ name: 'flexibleRollout', parameters: { rollout: String(i % 100), groupId: `bench.filler.${i}` }, constraints: [{ contextName: 'environment', operator: 'IN', values: ['production'] }] }],
      }),
    );
  }
  return { features, segments };
}

const percentile = (sorted: Float64Array, p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

export async function run(): Promise<SummaryRow[]> {
  const ns = hashTagged(`bench-flags-${randomUUID().slice(0, 8)}`);
  const redis = createRedis(REDIS_URL, { name: 'bench-flags' });
  const doc = flagSet();
  await new FlagStore(redis, ns).apply('bench', importEdit({ version: 1, ...doc }, true));
  // The snapshot gets a connection of its own, so every command it sends can be counted.
  const snapConn = createRedis(REDIS_URL, { name: 'bench-flags-snapshot' });
  const snapshot = new FlagSnapshot({ redis: snapConn, namespace: ns, busPartitions: busPartitionsFrom(), appName: 'chat-workflow', maxAgeMs: 600_000, pollMs: 600_000 });
  await snapshot.start();
  let commands = 0;
  const send = snapConn.sendCommand.bind(snapConn);
  snapConn.sendCommand = ((...args: Parameters<typeof send>) => {
    commands++;
    return send(...args);
  }) as typeof snapConn.sendCommand;

  const users = Array.from({ length: 10_000 }, () => randomUUID());
  // The first two are what the services evaluate per request (the target applies); the third
  // shows what a constraint-heavy flag costs in Unleash's evaluator (ip-address and semver parse
  // the values on every evaluation), reported without a target.
  const cases: Array<{ label: string; flag: string; target: boolean; ctx: (i: number) => Parameters<FlagSnapshot['evaluate']>[1] }> = [
    { label: 'kill switch (default strategy)', flag: PRODUCT_FLAGS.visionHighKill, target: true, ctx: (i) => ({ userId: users[i % users.length]! }) },
    { label: 'experiment (flexibleRollout + 3 variants)', flag: PRODUCT_FLAGS.chatProviderExperiment, target: true, ctx: (i) => ({ userId: users[i % users.length]!, properties: { projectId: 'proj-1' } }) },
    {
      label: 'targeted (3 constraints + segment + rollout)',
      flag: 'bench.targeted',
      target: false,
      ctx: (i) => ({ userId: users[i % users.length]!, remoteAddress: `10.1.${i % 250}.7`, properties: { appVersion: '2.3.1', plan: 'Pro-annual', projectId: `proj-${i % 60}` } }),
    },
  ];
  // Contexts are built up front: the request already has them; this measures the evaluation.
  const rows: SummaryRow[] = [];
  const table: Array<Record<string, string>> = [];
  try {
    for (const c of cases) {
      const contexts = Array.from({ length: 10_000 }, (_, i) => c.ctx(i));
      let sink = 0;
      for (let i = 0; i < 20_000; i++) sink += snapshot.evaluate(c.flag, contexts[i % contexts.length]).enabled ? 1 : 0; // warm-up
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < EVALS; i++) sink += snapshot.evaluate(c.flag, contexts[i % contexts.length]).enabled ? 1 : 0;
      const perSecond = EVALS / (Number(process.hrtime.bigint() - t0) / 1e9);
      const samples = new Float64Array(EVALS);
      for (let i = 0; i < EVALS; i++) {
        const ctx = contexts[i % contexts.length];
        const s = process.hrtime.bigint();
        sink += snapshot.evaluate(c.flag, ctx).enabled ? 1 : 0;
        samples[i] = Number(process.hrtime.bigint() - s) / 1000;
      }
      samples.sort();
      const p50 = percentile(samples, 50);
      const p99 = percentile(samples, 99);
      table.push({ flag: c.label, 'evals/s': Math.round(perSecond).toLocaleString('en-US'), 'p50 µs': p50.toFixed(2), 'p99 µs': p99.toFixed(2), 'p99.9 µs': percentile(samples, 99.9).toFixed(2), enabled: `${((sink / (EVALS * 2 + 20_000)) * 100).toFixed(0)}%` });
      rows.push({ benchmark: 'flags', measure: `${c.label}: evals/s, p99`, result: `${Math.round(perSecond).toLocaleString('en-US')}/s, ${p99.toFixed(2)} µs`, target: c.target ? `p99 < ${TARGET_P99_US} µs` : '(informational)', met: c.target ? p99 < TARGET_P99_US : null });
    }
    console.table(table);
    console.log(`Redis commands sent by the snapshot's connection during ${(cases.length * (EVALS * 2 + 20_000)).toLocaleString('en-US')} evaluations: ${commands}`);
    rows.push({ benchmark: 'flags', measure: 'Redis commands on the evaluation path', result: String(commands), target: '0', met: commands === 0 });
    if (rows.some((r) => r.met === false)) process.exitCode = 1;
    return rows;
  } finally {
    await snapshot.stop();
    await deleteByPrefix(redis, ns);
    await Promise.all([redis.quit(), snapConn.quit()]);
  }
}
