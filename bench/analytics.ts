/**
 * `pnpm bench analytics`: bus events through the real analytics service (one process, on a full
 * backlog) on real Redis. Prints the events/s it ingests against the rate the bus takes
 * publishes (measured here the way `pnpm bench ledger` measures it), and the p50/p99 of a
 * one-day overview over what it ingested.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { AnalyticsReader, analyticsKeys, bucketStart, createRedis, deleteByPrefix, EventBus, hashTagged } from '../packages/shared/src';
import { cpuMs } from './gateway';
import type { SummaryRow } from './summary';

const REQUESTS = Number(process.env.BENCH_ANALYTICS_REQUESTS ?? 20_000);
const QUERIES = Number(process.env.BENCH_ANALYTICS_QUERIES ?? 200);
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

async function groupDone(redis: ReturnType<typeof createRedis>, stream: string): Promise<boolean> {
  const groups = (await redis.xinfo('GROUPS', stream)) as unknown[][];
  for (const g of groups) {
    const f = new Map<string, unknown>();
    for (let i = 0; i < g.length; i += 2) f.set(String(g[i]), g[i + 1]);
    if (f.get('name') === 'analytics') return Number(f.get('pending')) === 0 && Number(f.get('lag')) === 0;
  }
  return false;
}

export async function run(): Promise<SummaryRow[]> {
  await build({ only: ['analytics'] });
  const prefix = `bench-an-${randomUUID().slice(0, 8)}`;
  const ns = hashTagged(prefix);
  const redis = createRedis(REDIS_URL, { name: 'bench-analytics' });
  let child: ChildProcess | undefined;
  try {
    // Spread over today so far: the overview reads every hour of the day.
    const dayStart = bucketStart(Date.now(), 'day');
    const span = Math.max(60_000, Date.now() - dayStart - 1_000);
    const publisher = new EventBus({ redis, prefix: ns, service: 'bench', maxLen: REQUESTS * 10 });
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
    const counted = (4 * REQUESTS) - Math.ceil(REQUESTS / 25) * 2;

    const nodeArgs = process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    child = spawn(process.execPath, [...nodeArgs, 'services/analytics/dist/index.js'], {
      cwd: root,
      env: { ...process.env, TOLLGATE_PREFIX: prefix, LOG_LEVEL: 'warn', BUS_MAX_LEN: String(REQUESTS * 10) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const t0 = Date.now();
    // CPU from the first event counted, so the process's start-up is not charged to the events.
    const redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1] ?? 0);
    const redisCpu = async () => {
      const info = await redis.info('cpu');
      return (Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1])) * 1000;
    };
    let cpu0: { child: number; redis: number } | undefined;
    while (!(await groupDone(redis, publisher.stream).catch(() => false))) {
      if (Date.now() - t0 > 300_000) throw new Error('analytics did not catch up within 5 minutes');
      if (!cpu0 && (await redis.exists(analyticsKeys(ns).seen(bucketStart(Date.now(), "day"))).catch(() => 0))) cpu0 = { child: cpuMs(child.pid), redis: await redisCpu() };
      await new Promise((r) => setTimeout(r, 20));
    }
    const seconds = (Date.now() - t0) / 1000;
    const perRequest = (ms: number) => Math.round((ms * 1000) / REQUESTS);
    const childUs = perRequest(cpuMs(child.pid) - (cpu0?.child ?? 0));
    const redisUs = redisPid ? perRequest((await redisCpu()) - (cpu0?.redis ?? 0)) : undefined;
    const ingestRate = Math.round(events / seconds);

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
    const fields = await redis.hlen(`${ns}:an:h:${bucketStart(Date.now(), 'hour')}`);
    console.table([
      {
        requests: REQUESTS,
        'bus events': events,
        'events analytics reads': counted,
        'publish events/s': publishRate,
        'ingest s': seconds.toFixed(2),
        'ingest events/s (all bus events)': ingestRate,
        'overview p50 ms': p(0.5),
        'overview p99 ms': p(0.99),
        'fields in the current hour': fields,
        'overview requests exact': exact,
        'analytics CPU µs/request': childUs,
        'redis CPU µs/request': redisUs ?? 'remote',
      },
    ]);
    if (!exact) process.exitCode = 1;
    return [
      { benchmark: 'analytics', measure: `ingest events/s (${events.toLocaleString()} bus events, 1 instance)`, result: `${ingestRate.toLocaleString()} (publish ${publishRate.toLocaleString()})`, target: '>= bus publish rate', met: ingestRate >= publishRate },
      { benchmark: 'analytics', measure: 'analytics process CPU per request (6 bus events, 4 read), on a backlog', result: `${childUs} µs (Redis ${redisUs ?? '?'} µs)`, target: '<= 100 µs', met: childUs <= 100 },
      { benchmark: 'analytics', measure: `one-day overview p99 (${QUERIES} queries)`, result: `${p(0.99)} ms (p50 ${p(0.5)})`, target: '< 50 ms', met: p(0.99) < 50 },
      { benchmark: 'analytics', measure: 'overview requests equal those published', result: `${overview.totals.requests} of ${REQUESTS}`, target: 'equal', met: exact },
    ];
  } finally {
    child?.kill('SIGTERM');
    if (child) await new Promise((r) => (child!.exitCode !== null ? r(null) : child!.once('exit', r)));
    await deleteByPrefix(redis, ns);
    await redis.quit();
  }
}
