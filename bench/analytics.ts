/**
 * `pnpm bench analytics`: bus events through the real analytics service (one process, then two in
 * one consumer group, on a full backlog) on real Redis. Prints the events/s it ingests against the rate the bus takes
 * publishes (measured here the way `pnpm bench ledger` measures it), and the p50/p99 of a
 * one-day overview over what it ingested.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { AnalyticsReader, analyticsKeys, bucketStart, busPartitionsFrom, createRedis, EventBus, hashTagged, deleteByPrefix, tenantShardNamespaces, tenantShardsFrom } from '../packages/shared/src';

/** The analytics keys of each tenant shard the services write (TENANT_SHARDS as they resolve it). */
const shardKeys = (ns: string) => tenantShardNamespaces(ns, tenantShardsFrom()).map(analyticsKeys);
import { busBacklog } from './bus-backlog';
import { benchNodeArgs, cpuMs } from './gateway';
import type { SummaryRow } from './summary';

const REQUESTS = Number(process.env.BENCH_ANALYTICS_REQUESTS ?? 20_000);
const QUERIES = Number(process.env.BENCH_ANALYTICS_QUERIES ?? 200);
/** The paced run: requests per second published while one instance reads them live (0: none). */
const RATE = Number(process.env.BENCH_ANALYTICS_RATE ?? 500);
const PACED_SECONDS = Number(process.env.BENCH_ANALYTICS_PACED_S ?? 10);
/** Instance counts to time, one after the other (the service scales out in one consumer group). */
const INSTANCES = (process.env.BENCH_ANALYTICS_INSTANCES ?? '1,2').split(',').map(Number);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const root = join(__dirname, '..');
const { build } = require('../scripts/build.js') as { build(options?: { only?: string[] }): Promise<unknown> };

const MODELS = [['openai', 'gpt-4o-mini'], ['gemini', 'gemini-2.0-flash'], ['deepseek', 'deepseek-chat']] as const;

/** Per request what the workers and the ledger publish: 6 events, 4 of which analytics reads. */
function requestEvents(i: number, t: number) {
  const [provider, model] = MODELS[i % MODELS.length]!;
  const streamed = i % 3 === 0;
  const meta = { correlation_id: `r${i}`, user_id: `u${i % 20}`, project_id: `p${i % 4}`, occurred_at: new Date(t).toISOString() };
  const latency = 40 + ((i * 7919) % 900) + (i % 97 === 0 ? 4_000 : 0);
  const failed = i % 25 === 0;
  const tags = { route: streamed ? '/v1/chat/completions' : '/v1/chat', streamed };
  const out = [
    { type: 'workflow.started' as const, data: { workflow: 'chat' as const, ...tags }, meta },
    { type: 'chat.message_received' as const, data: { conversation_id: `c${i}`, message_chars: 20, history_messages: 0 }, meta },
  ];
  if (failed) {
    return [...out, {
      type: 'workflow.failed' as const,
      data: { workflow: 'chat' as const, duration_ms: latency, latency_ms: latency, attempts: 2, fallback_used: true, provider, model, ...tags, error: { category: 'provider_unavailable' as const, strategy: 'fallback_provider' as const, code: 'provider_unavailable', message: 'x', suggested_actions: [], retryable: true } },
      meta,
    }];
  }
  const units = { input_tokens: 100 + (i % 500), output_tokens: 20 + (i % 300) };
  return [
    ...out,
    { type: 'usage.recorded' as const, data: { provider, model, service: 'chat-workflow', operation: 'chat', units, usage_source: 'provider' as const, request_id: `r${i}`, cached: false }, meta },
    {
      type: 'workflow.completed' as const,
      data: { workflow: 'chat' as const, duration_ms: latency, latency_ms: latency, provider, model, attempts: 1, fallback_used: false, output_tokens: units.output_tokens, generation_ms: latency - 20, ...(streamed && { ttft_ms: Math.round(latency / 4) }), ...tags },
      meta,
    },
    {
      type: 'cost.recorded' as const,
      data: { entry_id: `le${i}`, usage_event_id: `u${i}`, amount_micros: 10 + (i % 1000), price_version: 'v1', provider, model, service: 'chat-workflow', operation: 'chat', units, cached: false, occurred_at: meta.occurred_at, totals: [] },
      meta,
    },
  ];
}

async function groupDone(redis: ReturnType<typeof createRedis>, streams: readonly string[]): Promise<boolean> {
  return (await busBacklog(redis, streams, 'analytics')) === 0;
}

interface Ingest {
  instances: number;
  events: number;
  publishRate: number;
  seconds: number;
  ingestRate: number;
  /** CPU µs per request of all analytics processes together, and of Redis. */
  childUs: number;
  redisUs?: number;
}

/** One analytics process on the bench's prefix, as deployed. */
function spawnAnalytics(prefix: string, busMaxLen: number): ChildProcess {
  return spawn(process.execPath, [...benchNodeArgs(), 'services/analytics/dist/index.js'], {
    cwd: root,
    env: { ...process.env, TOLLGATE_PREFIX: prefix, LOG_LEVEL: 'warn', BUS_MAX_LEN: String(busMaxLen) },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}

/** Redis's own CPU time so far (user + system, ms), from INFO. */
async function redisCpuMs(redis: ReturnType<typeof createRedis>): Promise<number> {
  const info = await redis.info('cpu');
  return (Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1])) * 1000;
}

/**
 * Publishes REQUESTS requests' events into `ns`, then starts `instances` analytics processes in one
 * consumer group on that backlog and times them until the group has read and acked everything.
 */
async function ingest(redis: ReturnType<typeof createRedis>, prefix: string, instances: number): Promise<Ingest> {
  const ns = hashTagged(prefix);
  // Spread over today so far: the overview reads every hour of the day.
  const dayStart = bucketStart(Date.now(), 'day');
  const span = Math.max(60_000, Date.now() - dayStart - 1_000);
  const publisher = new EventBus({ redis, prefix: ns, service: 'bench', maxLen: REQUESTS * 10, partitions: busPartitionsFrom() });
  let events = 0;
  const started = Date.now();
  const BATCH = 1_000;
  let batch: Parameters<EventBus['publishMany']>[0][number][] = [];
  for (let i = 0; i < REQUESTS; i++) {
    for (const e of requestEvents(i, dayStart + Math.floor((i / REQUESTS) * span))) batch.push(e as never);
    if (batch.length >= BATCH || i === REQUESTS - 1) {
      await publisher.publishMany(batch);
      events += batch.length;
      batch = [];
    }
  }
  const publishRate = Math.round(events / ((Date.now() - started) / 1000));

  const children: ChildProcess[] = [];
  try {
    for (let i = 0; i < instances; i++) children.push(spawnAnalytics(prefix, REQUESTS * 10));
    const t0 = Date.now();
    // CPU from the first event counted, so the processes' start-up is not charged to the events.
    const redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1] ?? 0);
    const childCpu = () => children.reduce((n, c) => n + cpuMs(c.pid), 0);
    let cpu0: { child: number; redis: number } | undefined;
    while (!(await groupDone(redis, publisher.streams).catch(() => false))) {
      if (Date.now() - t0 > 300_000) throw new Error('analytics did not catch up within 5 minutes');
      if (!cpu0 && (await Promise.all(shardKeys(ns).map((k) => redis.exists(k.seen(bucketStart(Date.now(), 'day'))))).catch(() => [0])).some(Boolean)) cpu0 = { child: childCpu(), redis: await redisCpuMs(redis) };
      await new Promise((r) => setTimeout(r, 20));
    }
    const seconds = (Date.now() - t0) / 1000;
    const perRequest = (ms: number) => Math.round((ms * 1000) / REQUESTS);
    return {
      instances,
      events,
      publishRate,
      seconds,
      ingestRate: Math.round(events / seconds),
      childUs: perRequest(childCpu() - (cpu0?.child ?? 0)),
      ...(redisPid && { redisUs: perRequest((await redisCpuMs(redis)) - (cpu0?.redis ?? 0)) }),
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
  }
}

/**
 * One instance reading live: RATE requests' events a second, published in 20 ms ticks for
 * PACED_SECONDS, as a gateway under steady load would. Its CPU per request is the figure
 * `pnpm bench gateway` reports for analytics, without the other processes sharing the cores.
 */
async function paced(redis: ReturnType<typeof createRedis>, prefix: string): Promise<{ requests: number; childUs: number; redisUs?: number; lagMs: number }> {
  const ns = hashTagged(prefix);
  const publisher = new EventBus({ redis, prefix: ns, service: 'bench', maxLen: RATE * PACED_SECONDS * 10, partitions: busPartitionsFrom() });
  const child = spawnAnalytics(prefix, RATE * PACED_SECONDS * 10);
  try {
    // Ready once its group exists on every partition.
    const t0 = Date.now();
    while (!(await groupDone(redis, publisher.streams).catch(() => false))) {
      if (Date.now() - t0 > 30_000) throw new Error('analytics did not start within 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    const cpu0 = { child: cpuMs(child.pid), redis: await redisCpuMs(redis) };
    const total = RATE * PACED_SECONDS;
    const start = Date.now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((Date.now() - start) / 1000) * RATE));
      const batch: Parameters<EventBus['publishMany']>[0][number][] = [];
      for (; sent < due; sent++) for (const e of requestEvents(sent, Date.now())) batch.push(e as never);
      if (batch.length > 0) await publisher.publishMany(batch);
      await new Promise((r) => setTimeout(r, 20));
    }
    const published = Date.now();
    while (!(await groupDone(redis, publisher.streams).catch(() => false))) await new Promise((r) => setTimeout(r, 10));
    const lagMs = Date.now() - published;
    const perRequest = (ms: number) => Math.round((ms * 1000) / total);
    return { requests: total, childUs: perRequest(cpuMs(child.pid) - cpu0.child), redisUs: perRequest((await redisCpuMs(redis)) - cpu0.redis), lagMs };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
  }
}

export async function run(): Promise<SummaryRow[]> {
  await build({ only: ['analytics'] });
  const redis = createRedis(REDIS_URL, { name: 'bench-analytics' });
  const prefixes: string[] = [];
  try {
    const runs: Ingest[] = [];
    for (const instances of INSTANCES) {
      const prefix = `bench-an-${randomUUID().slice(0, 8)}`;
      prefixes.push(prefix);
      process.stdout.write(`  ${REQUESTS.toLocaleString()} requests' events, ${instances} analytics instance(s)...\n`);
      runs.push(await ingest(redis, prefix, instances));
    }
    let live: Awaited<ReturnType<typeof paced>> | undefined;
    if (RATE > 0) {
      const prefix = `bench-an-${randomUUID().slice(0, 8)}`;
      prefixes.push(prefix);
      process.stdout.write(`  ${RATE} requests/s for ${PACED_SECONDS} s, read live by 1 analytics instance...\n`);
      live = await paced(redis, prefix);
      console.table([{ 'requests/s': RATE, requests: live.requests, 'analytics CPU µs/request': live.childUs, 'redis CPU µs/request': live.redisUs, 'caught up ms after the last publish': live.lagMs }]);
    }
    const ns = hashTagged(prefixes.at(-(RATE > 0 ? 2 : 1))!);
    const counted = (4 * REQUESTS) - Math.ceil(REQUESTS / 25) * 2;
    const reader = new AnalyticsReader(redis, ns);
    const overview = await reader.overview('day');
    const exact = overview.totals.requests === REQUESTS;
    const times: number[] = [];
    for (let i = 0; i < QUERIES; i++) {
      const q0 = process.hrtime.bigint();
      // Alternately everything (admin) and one tenant, as the dashboard asks.
      await reader.overview('day', i % 2 ? { user: [`u${i % 20}`] } : {});
      times.push(Number(process.hrtime.bigint() - q0) / 1e6);
    }
    times.sort((a, b) => a - b);
    const p = (q: number) => Number(times[Math.floor(q * (times.length - 1))]!.toFixed(2));
    let fields = 0;
    for (const k of shardKeys(ns)) fields += await redis.hlen(k.bucket('hour', bucketStart(Date.now(), 'hour')));
    console.table(runs.map((r) => ({
      requests: REQUESTS,
      instances: r.instances,
      'bus events': r.events,
      'events analytics reads': counted,
      'publish events/s': r.publishRate,
      'ingest s': r.seconds.toFixed(2),
      'ingest events/s (all bus events)': r.ingestRate,
      'analytics CPU µs/request': r.childUs,
      'redis CPU µs/request': r.redisUs ?? 'remote',
    })));
    console.table([{ 'overview p50 ms': p(0.5), 'overview p99 ms': p(0.99), 'fields in the current hour': fields, 'overview requests exact': exact }]);
    if (!exact) process.exitCode = 1;
    return [
      ...runs.map((r) => ({
        benchmark: 'analytics',
        measure: `ingest events/s (${r.events.toLocaleString()} bus events, ${r.instances} instance${r.instances > 1 ? 's' : ''})`,
        result: `${r.ingestRate.toLocaleString()} (publish ${r.publishRate.toLocaleString()})`,
        target: '>= bus publish rate',
        met: r.ingestRate >= r.publishRate,
      })),
      ...runs.map((r) => ({
        benchmark: 'analytics',
        measure: `analytics CPU per request (6 bus events, 4 read), backlog, ${r.instances} instance${r.instances > 1 ? 's' : ''}`,
        result: `${r.childUs} µs (Redis ${r.redisUs ?? '?'} µs)`,
        target: '<= 100 µs',
        met: r.childUs <= 100,
      })),
      ...(live
        ? [{ benchmark: 'analytics', measure: `analytics CPU per request, read live at ${RATE} requests/s, 1 instance`, result: `${live.childUs} µs (Redis ${live.redisUs ?? '?'} µs; caught up ${live.lagMs} ms after the last publish)`, target: '<= 100 µs', met: live.childUs <= 100 }]
        : []),
      { benchmark: 'analytics', measure: `one-day overview p99 (${QUERIES} queries)`, result: `${p(0.99)} ms (p50 ${p(0.5)})`, target: '< 50 ms', met: p(0.99) < 50 },
      { benchmark: 'analytics', measure: 'overview requests equal those published', result: `${overview.totals.requests} of ${REQUESTS}`, target: 'equal', met: exact },
    ];
  } finally {
    for (const prefix of prefixes) await deleteByPrefix(redis, hashTagged(prefix));
    await redis.quit();
  }
}
