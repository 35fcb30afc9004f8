/**
 * `pnpm test:reliability`: the whole system as separate processes on its own Redis (append-only
 * file in a temp dir), under a bounded loopback load, while the stub injects 429s, 503s, hangs
 * and malformed bodies, each worker service is SIGKILLed and restarted in turn, and Redis itself
 * is restarted once. Then, with faults off and everything drained, it checks that nothing was
 * lost or doubled: outcomes per request, ledger against the provider's billed calls to the
 * micro-dollar, alerts, events and processes. Prints a table; the last line is
 * `N passed, N failed`. Everything it started is stopped and removed, on failure and Ctrl-C too.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  alertingKeys,
  ApiKeyStore,
  type AnyEvent,
  createRedis,
  EventBus,
  fieldsOf,
  hashTagged,
  scanKeys,
  type LedgerEntry,
  AnalyticsReader,
  busPartitionsFrom,
  LedgerReader,
  ledgerKeys,
  ledgerShards,
  parseAlertEntry,
  queuePartitionPrefixes,
  queuePartitionsFrom,
  tenantShardsFrom,
  queuePrefix,
  QUEUES,
} from '../../packages/shared/src';
import type { BilledCall, StubStats } from '../../packages/stub-llm/src';
import {
  type AlertNotice,
  type BudgetSpec,
  checkAlertCoverage,
  checkHardBudgets,
  checkAlertDuplicates,
  checkOutcomes,
  checkReplyEvents,
  type CheckResult,
  checkWebhooks,
  type Delivery,
  indexEvents,
  KILL_WINDOW,
  reconcile,
  result,
  summarizeOutcomes,
} from './checks';
import { LoadGenerator } from './load';
import { type ExitRecord, freePort, Proc, sleep, waitReady } from './procs';

const root = join(__dirname, '..', '..');
const { build } = require('../build.js') as { build(options?: { only?: string[] }): Promise<unknown> };
const num = (name: string, def: number) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : def;
};

const LOAD_MS = num('RELIABILITY_LOAD_SECONDS', 75) * 1000;
/** `--cluster` (or RELIABILITY_CLUSTER=1): the run's own 3-master Redis Cluster instead of one node. */
const CLUSTER = process.argv.includes('--cluster') || process.env.RELIABILITY_CLUSTER === '1';
const CONCURRENCY = num('RELIABILITY_CONCURRENCY', 30);
const MAX_REQUESTS = 20_000;
const VISION_SHARE = 0.1;
// The default request deadline: a killed worker's jobs must be run again well within it.
const DEADLINE_MS = 60_000;
const PROVIDER_TIMEOUT_MS = 2_500;
const READY_TIMEOUT_MS = 30_000;
const SETTLE_TIMEOUT_MS = 120_000;
const WORKERS = ['chat-workflow', 'cost-ledger', 'vision', 'alerting', 'analytics', 'journeys'] as const;
type Worker = (typeof WORKERS)[number];
const FAULTS = { rate429: 0.05, rate503: 0.05, hangRate: 0.05, malformedRate: 0.05, retryAfterSeconds: 1, latencyMs: 40, latencyJitterMs: 120 };
const LATENCY_ONLY = { latencyMs: 40, latencyJitterMs: 120 };

// ioredis is not a root dependency; its type comes through the shared helper.
type Redis = ReturnType<typeof createRedis>;

interface Ctx {
  tmp: string;
  logDir: string;
  exits: ExitRecord[];
  procs: Map<string, Proc>;
  /** One redis-server, or the masters of the run's own cluster. */
  redisProcs: Proc[];
  redis?: Redis;
  webhookServer?: Server;
}

const ctx: Ctx = { tmp: '', logDir: '', exits: [], procs: new Map(), redisProcs: [] };
const timeline: Array<{ t: number; what: string }> = [];
let t0 = Date.now();
const rel0 = (ms: number) => `+${((ms - t0) / 1000).toFixed(3)}s`;
const say = (what: string) => {
  const t = Math.round((Date.now() - t0) / 100) / 10;
  timeline.push({ t, what });
  process.stdout.write(`[reliability +${t.toFixed(1)}s] ${what}\n`);
};

let cleaning: Promise<void> | undefined;
function cleanup(keepLogs: boolean): Promise<void> {
  cleaning ??= (async () => {
    ctx.webhookServer?.close();
    ctx.webhookServer?.closeAllConnections();
    // Services first (they would log reconnect noise without Redis), Redis last.
    await Promise.allSettled([...ctx.procs.values()].map((p) => p.stop()));
    ctx.redis?.disconnect();
    await Promise.allSettled(ctx.redisProcs.map((p) => p.stop()));
    if (ctx.tmp) {
      if (keepLogs) {
        const dest = join(root, 'test-artifacts', 'reliability', 'logs');
        try {
          rmSync(dest, { recursive: true, force: true });
          mkdirSync(dest, { recursive: true });
          cpSync(ctx.logDir, dest, { recursive: true });
          process.stdout.write(`service logs kept in ${dest}\n`);
        } catch {
          // best effort
        }
      }
      rmSync(ctx.tmp, { recursive: true, force: true });
    }
  })();
  return cleaning;
}

async function json<T>(url: string, init?: RequestInit): Promise<T> {
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: HTTP ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

async function redisUp(port: number, timeoutMs: number): Promise<boolean> {
  const probe = createRedis(`redis://127.0.0.1:${port}`, { name: 'reliability-probe', logger: { warn: () => undefined }, maxRetriesPerRequest: 0, retryStrategy: () => 100, lazyConnect: true, nodes: null });
  probe.on('error', () => undefined);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      try {
        if (probe.status !== 'ready') await probe.connect().catch(() => undefined);
        if ((await probe.ping()) === 'PONG') {
          // Loading the append-only file answers -LOADING; a ping that passes means the data is there.
          return true;
        }
      } catch {
        // not yet
      }
      await sleep(100);
    }
    return false;
  } finally {
    probe.disconnect();
  }
}

/**
 * Starts redis-server on each port (append-only, a directory each). With several ports they become
 * one cluster (`redis-cli --cluster create`, no replicas); returns REDIS_CLUSTER_NODES for it, or
 * '' for one node.
 */
async function startRedis(redisPorts: number[]): Promise<string> {
  const cluster = redisPorts.length > 1;
  for (const [i, port] of redisPorts.entries()) {
    const dir = join(ctx.tmp, `redis-${port}`);
    mkdirSync(dir);
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', '', '--protected-mode', 'no'];
    if (cluster) args.push('--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000');
    const proc = new Proc(cluster ? `redis-${i}` : 'redis', 'redis-server', args, {}, { cwd: root, logDir: ctx.logDir, exits: ctx.exits });
    ctx.redisProcs.push(proc);
    proc.start();
    if (!(await redisUp(port, 10_000))) throw new Error(`redis-server on ${port} did not start`);
  }
  if (!cluster) {
    say(`redis-server on ${redisPorts[0]} (appendonly)`);
    return '';
  }
  const addrs = redisPorts.map((p) => `127.0.0.1:${p}`);
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...addrs, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
  const ok = (p: number) => /cluster_state:ok\b/.test(spawnSync('redis-cli', ['-p', String(p), 'CLUSTER', 'INFO'], { encoding: 'utf8' }).stdout ?? '');
  const deadline = Date.now() + 30_000;
  while (!redisPorts.every(ok)) {
    if (Date.now() > deadline) throw new Error('the cluster did not reach cluster_state:ok');
    await sleep(100);
  }
  say(`redis cluster of ${redisPorts.length} masters on ${addrs.join(', ')} (appendonly)`);
  return addrs.join(',');
}

async function groupsCaughtUp(redis: Redis, stream: string, groups: string[]): Promise<string | null> {
  const info = fieldsOf(await redis.xinfo('STREAM', stream).catch(() => null));
  const last = String(info['last-generated-id'] ?? '0-0');
  const all = ((await redis.xinfo('GROUPS', stream).catch(() => [])) as unknown[]).map(fieldsOf);
  for (const name of groups) {
    const g = all.find((x) => x.name === name);
    if (!g) return `${stream}: no group ${name}`;
    if (Number(g.pending) > 0) return `${name}: ${String(g.pending)} pending on ${stream.split(':').pop()}`;
    if (String(g['last-delivered-id']) !== last) return `${name}: behind on ${stream.split(':').pop()}`;
  }
  return null;
}

async function main(): Promise<number> {
  t0 = Date.now();
  ctx.tmp = mkdtempSync(join(tmpdir(), 'tollgate-reliability-'));
  ctx.logDir = join(ctx.tmp, 'logs');
  mkdirSync(ctx.logDir);
  const ports = { redis: await freePort(), stub: await freePort(), gateway: await freePort(), webhook: await freePort() };
  const clusterPorts = CLUSTER ? [ports.redis, await freePort(), await freePort()] : [];
  const healthPorts = {} as Record<Worker, number>;
  for (const w of WORKERS) healthPorts[w] = await freePort();
  const prefix = `reliability-${randomBytes(4).toString('hex')}`;
  const ns = hashTagged(prefix);
  const redisUrl = `redis://127.0.0.1:${ports.redis}`;
  const adminToken = randomBytes(24).toString('base64url');
  const stubUrl = `http://127.0.0.1:${ports.stub}`;
  const gatewayUrl = `http://127.0.0.1:${ports.gateway}`;
  const admin = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };

  // Redis with an append-only file, so a restart keeps everything acknowledged before it. On a
  // cluster, each master has its own; the one restarted below is the first.
  const clusterNodes = await startRedis(CLUSTER ? clusterPorts : [ports.redis]);
  // The runner's own connections (createRedis) and every service's go to the cluster.
  process.env.REDIS_CLUSTER_NODES = clusterNodes;
  // BUS_PARTITIONS=4 runs the whole suite on a partitioned bus (a cluster's default is 6); the
  // services and the checks agree on it.
  const busPartitions = busPartitionsFrom(process.env);

  const env: NodeJS.ProcessEnv = {
    NODE_ENV: 'production',
    REDIS_URL: redisUrl,
    REDIS_CLUSTER_NODES: clusterNodes,
    TOLLGATE_PREFIX: prefix,
    GATEWAY_HOST: '127.0.0.1',
    GATEWAY_PORT: String(ports.gateway),
    STUB_HOST: '127.0.0.1',
    STUB_PORT: String(ports.stub),
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: 'warn',
    LOG_FORMAT: 'json',
    // Every provider on the stub, whatever the caller's environment holds.
    OPENAI_API_KEY: '',
    GEMINI_API_KEY: '',
    DEEPSEEK_API_KEY: '',
    OPENAI_BASE_URL: '',
    GEMINI_BASE_URL: '',
    DEEPSEEK_BASE_URL: '',
    CHAT_FALLBACK_CHAIN: '',
    PRICE_TABLE_FILE: '',
    RATE_LIMIT_PER_MINUTE: '10000000',
    PROVIDER_TIMEOUT_MS: String(PROVIDER_TIMEOUT_MS),
    REQUEST_DEADLINE_MS: String(DEADLINE_MS),
    // Large enough that nothing is trimmed during the run; reclaim a killed consumer's events quickly.
    BUS_MAX_LEN: '2000000',
    BUS_CLAIM_IDLE_MS: '5000',
    BUS_PARTITIONS: String(busPartitions),
    ALERT_WEBHOOK_BACKOFF_MS: '200',
    HEALTH_HOST: '127.0.0.1',
    HEALTH_PORT: '',
    STUB_FAULTS: JSON.stringify(LATENCY_ONLY),
    STUB_CALL_LOG: '1',
  };
  const mk = (name: string, args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const p = new Proc(name, process.execPath, args, { ...env, ...extra }, { cwd: root, logDir: ctx.logDir, exits: ctx.exits });
    ctx.procs.set(name, p);
    return p;
  };
  // Plain node on the bundles of the current sources, as the images run them.
  await build();
  mk('stub-llm', ['packages/stub-llm/dist/index.js']).start();
  mk('gateway', ['services/gateway/dist/index.js']).start();
  for (const w of WORKERS) mk(w, [`services/${w}/dist/index.js`], { HEALTH_PORT: String(healthPorts[w]) }).start();
  const readyUrl = (name: string) => (name === 'gateway' ? `${gatewayUrl}/readyz` : name === 'stub-llm' ? `${stubUrl}/healthz` : `http://127.0.0.1:${healthPorts[name as Worker]}/readyz`);
  const startup = await Promise.all([...ctx.procs.keys()].map(async (n) => [n, await waitReady(readyUrl(n), 60_000)] as const));
  const notReady = startup.filter(([, ok]) => !ok).map(([n]) => n);
  if (notReady.length) throw new Error(`did not become ready: ${notReady.join(', ')}`);
  say(`stub, gateway and ${WORKERS.join(', ')} ready (prefix ${prefix})`);

  const redis = createRedis(redisUrl, { name: 'reliability' });
  redis.on('error', () => undefined);
  ctx.redis = redis;

  // Keys: four users over two projects.
  const users = ['rel-u1', 'rel-u2', 'rel-u3', 'rel-u4'];
  const projectOf = (u: string) => (u === 'rel-u1' || u === 'rel-u2' ? 'rel-p1' : 'rel-p2');
  const store = new ApiKeyStore(redis, ns);
  const keys: string[] = [];
  for (const u of users) keys.push((await store.create({ name: u, user_id: u, project_id: projectOf(u), scopes: ['chat', 'vision', 'costs'] })).key);

  // Soft budgets sized to be crossed during the run, at different moments, so thresholds fire
  // while services and Redis are being restarted.
  const budgets: BudgetSpec[] = [
    { scope: 'project', scopeId: 'rel-p1', period: 'day', limitMicros: 1_500_000, thresholds: [50, 80, 100] },
    { scope: 'project', scopeId: 'rel-p2', period: 'week', limitMicros: 2_500_000, thresholds: [25, 50, 75, 100] },
    { scope: 'project', scopeId: 'rel-p2', period: 'month', limitMicros: 6_000_000, thresholds: [50, 80, 100] },
    { scope: 'user', scopeId: 'rel-u1', period: 'day', limitMicros: 400_000, thresholds: [50, 80, 100] },
    { scope: 'user', scopeId: 'rel-u3', period: 'month', limitMicros: 900_000, thresholds: [10, 50, 90, 100] },
    { scope: 'user', scopeId: 'rel-u4', period: 'week', limitMicros: 1_600_000, thresholds: [50, 80, 100] },
    // Hard: used up early in the run, so the rest of rel-u2's requests meet the hold check under chaos.
    { scope: 'user', scopeId: 'rel-u2', period: 'day', limitMicros: 300_000, thresholds: [50, 80, 100], mode: 'hard' },
  ];
  const byScope = new Map<string, BudgetSpec[]>();
  for (const b of budgets) byScope.set(`${b.scope}/${b.scopeId}`, [...(byScope.get(`${b.scope}/${b.scopeId}`) ?? []), b]);
  for (const [scope, specs] of byScope) {
    await json(`${gatewayUrl}/v1/budgets/${scope}`, {
      method: 'PUT',
      headers: admin,
      body: JSON.stringify({ periods: specs.map((b) => ({ period: b.period, limit_micros: b.limitMicros, mode: b.mode ?? 'soft', thresholds_pct: b.thresholds })) }),
    });
  }

  // A webhook target: every notice must reach it, each as one delivery.
  const deliveries: Delivery[] = [];
  ctx.webhookServer = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { alert?: { alert_id?: string; state?: string } };
        deliveries.push({ deliveryId: String(req.headers['x-tollgate-delivery'] ?? ''), alertId: String(body.alert?.alert_id), state: String(body.alert?.state) });
      } catch {
        deliveries.push({ deliveryId: String(req.headers['x-tollgate-delivery'] ?? ''), alertId: '(unparsable)', state: '' });
      }
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => ctx.webhookServer!.listen(ports.webhook, '127.0.0.1', resolve));
  await json(`${gatewayUrl}/v1/alerts/webhooks/reliability`, {
    method: 'PUT',
    headers: admin,
    body: JSON.stringify({ url: `http://127.0.0.1:${ports.webhook}/hook`, secret: randomBytes(24).toString('hex') }),
  });
  say(`${keys.length} API keys, ${budgets.length} budgets (${budgets.filter((b) => b.mode === 'hard').length} hard), 1 webhook target`);

  // ---- load with chaos --------------------------------------------------------------------
  const load = new LoadGenerator({
    gatewayUrl,
    keys,
    concurrency: CONCURRENCY,
    durationMs: LOAD_MS,
    maxRequests: MAX_REQUESTS,
    visionShare: VISION_SHARE,
    // The gateway answers by its deadline plus 2 s; past this margin the request counts as hung.
    clientTimeoutMs: DEADLINE_MS + 10_000,
  });
  const loadStart = Date.now();
  const at = (fraction: number) => sleep(Math.max(0, loadStart + fraction * LOAD_MS - Date.now()));
  load.start();
  say(`load: ${CONCURRENCY} concurrent loops for ${LOAD_MS / 1000} s (${Math.round(VISION_SHARE * 100)}% vision), request deadline ${DEADLINE_MS / 1000} s`);

  const restarts: Array<{ name: string; ready: boolean; ms: number }> = [];
  const kills: Array<{ name: Worker; at: number }> = [];
  const killAndRestart = async (name: Worker) => {
    const p = ctx.procs.get(name)!;
    kills.push({ name, at: Date.now() });
    await p.kill('SIGKILL');
    say(`SIGKILL ${name} (pid ${p.pid}, ${load.pending} requests in flight)`);
    await sleep(1_000);
    const started = Date.now();
    p.start();
    const ready = await waitReady(readyUrl(name), READY_TIMEOUT_MS);
    restarts.push({ name, ready, ms: Date.now() - started });
    say(`${name} restarted: ${ready ? `ready in ${Date.now() - started} ms` : 'NOT ready'}`);
  };

  let redisRestart: { downMs: number; services: Array<{ name: string; alive: boolean; ready: boolean; ms: number }> } | undefined;
  let repliesAfterRedis = 0;
  const chaos = (async () => {
    await at(0.05);
    await json(`${stubUrl}/_stub/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...FAULTS, seed: 42 }) });
    say(`stub faults on: ${JSON.stringify(FAULTS)}`);
    const schedule: Array<[number, Worker]> = [[0.12, 'chat-workflow'], [0.27, 'cost-ledger'], [0.4, 'vision'], [0.54, 'alerting'], [0.59, 'analytics'], [0.64, 'journeys']];
    for (const [fraction, name] of schedule) {
      await at(fraction);
      await killAndRestart(name);
    }
    await at(0.68);
    const down = Date.now();
    await ctx.redisProcs[0]!.kill('SIGTERM');
    say(`redis-server${CLUSTER ? ' (one of the 3 masters)' : ''} stopped (SIGTERM; it writes the append-only file on the way down), ${load.pending} requests in flight`);
    await sleep(1_500);
    ctx.redisProcs[0]!.start();
    const up = await redisUp(ports.redis, 20_000);
    const downMs = Date.now() - down;
    say(`redis-server ${up ? 'back' : 'NOT back'} on port ${ports.redis} after ${downMs} ms`);
    const services = await Promise.all(
      [...ctx.procs.keys()].filter((n) => n !== 'stub-llm').map(async (name) => {
        const started = Date.now();
        const ready = await waitReady(readyUrl(name), READY_TIMEOUT_MS);
        return { name, alive: ctx.procs.get(name)!.alive(), ready, ms: Date.now() - started };
      }),
    );
    redisRestart = { downMs, services };
    say(`after the Redis restart: ${services.map((s) => `${s.name} ${s.alive && s.ready ? `ready in ${s.ms} ms` : s.alive ? 'NOT ready' : 'EXITED'}`).join(', ')}`);
    const redisBackAt = Date.now();
    await at(0.88);
    await json(`${stubUrl}/_stub/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(LATENCY_ONLY) });
    say('stub faults off');
    await at(1);
    repliesAfterRedis = load.outcomes.filter((o) => o.sentAt > redisBackAt && o.status !== undefined && o.status < 300).length;
  })();

  await chaos;
  load.stopSending();
  say(`load stopped: ${load.requestsSent} sent, waiting for ${load.pending} in flight`);
  await load.done();
  say(`every request has an outcome (${load.outcomes.length})`);

  // ---- settle -------------------------------------------------------------------------------
  await json(`${stubUrl}/_stub/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  // BullMQ's own key layout, read directly: jobs waiting, running, delayed or prioritized, summed
  // over a request queue's partitions (the services resolve QUEUE_PARTITIONS from this same env).
  const partitions = queuePartitionsFrom({ ...process.env, ...env });
  const queueOpen = async (name: string) => {
    const prefixes = name === QUEUES.chat || name === QUEUES.vision ? queuePartitionPrefixes(ns, partitions) : [queuePrefix(ns)];
    const open = { wait: 0, active: 0, paused: 0, delayed: 0, prioritized: 0 };
    for (const prefix of prefixes) {
      const q = `${prefix}:${name}`;
      const [wait, active, paused, delayed, prioritized] = await Promise.all([
        redis.llen(`${q}:wait`), redis.llen(`${q}:active`), redis.llen(`${q}:paused`), redis.zcard(`${q}:delayed`), redis.zcard(`${q}:prioritized`),
      ]);
      open.wait += wait;
      open.active += active;
      open.paused += paused;
      open.delayed += delayed;
      open.prioritized += prioritized;
    }
    return open;
  };
  const lk = ledgerKeys(ns);
  // The ledger's tenant shards, as the services resolve TENANT_SHARDS from this same env.
  const tenantShards = tenantShardsFrom({ ...process.env, ...env });
  const ledgerReader = new LedgerReader(redis, ns, tenantShards);
  const ak = alertingKeys(ns);
  const bus = new EventBus({ redis, prefix: ns, service: 'reliability-suite', partitions: busPartitions });
  const settleStart = Date.now();
  let lastLedger = -1;
  let lastBilled = -1;
  let waitingFor = '';
  let settled = false;
  while (Date.now() - settleStart < SETTLE_TIMEOUT_MS) {
    const reasons: string[] = [];
    for (const name of [QUEUES.chat, QUEUES.vision, QUEUES.webhooks]) {
      const c = await queueOpen(name);
      if (Object.values(c).some((n) => n > 0)) reasons.push(`${name} queue: ${JSON.stringify(c)}`);
    }
    const busLags = await Promise.all(bus.streams.map((s) => groupsCaughtUp(redis, s, ['cost-ledger', 'alerting', 'analytics', 'journeys'])));
    reasons.push(...busLags.filter((lag): lag is string => lag !== null));
    const alertLag = await groupsCaughtUp(redis, ak.alertsStream, ['alerting']).catch(() => null);
    if (alertLag && !alertLag.includes('no group')) reasons.push(alertLag);
    const ledger = await ledgerReader.count();
    const billed = (await json<StubStats>(`${stubUrl}/_stub/stats`)).totals.successes;
    if (ledger !== lastLedger || billed !== lastBilled) reasons.push(`ledger ${ledger} entries, stub ${billed} billed calls (still moving)`);
    lastLedger = ledger;
    lastBilled = billed;
    if (reasons.length === 0) {
      settled = true;
      break;
    }
    if (reasons.join('; ') !== waitingFor) {
      waitingFor = reasons.join('; ');
      say(`settling: ${waitingFor}`);
    }
    await sleep(1_000);
  }
  const settleMs = Date.now() - settleStart;
  say(settled ? `settled in ${settleMs} ms` : `NOT settled after ${settleMs} ms: ${waitingFor}`);

  // ---- gather -------------------------------------------------------------------------------
  const checks: CheckResult[] = [];
  const outcomes = load.outcomes;
  const summary = summarizeOutcomes(outcomes, load.requestsSent);

  const stubLog = await json<{ enabled: boolean; calls: BilledCall[] }>(`${stubUrl}/_stub/calls`);
  const calls = stubLog.calls;
  const stubStats = await json<StubStats>(`${stubUrl}/_stub/stats`);
  const entries: LedgerEntry[] = [];
  for (const shard of ledgerShards(ns, tenantShards)) {
    for await (const page of scanKeys(redis, `${shard.entry('')}*`)) {
      const pipe = redis.pipeline();
      for (const key of page) pipe.get(key);
      for (const [, raw] of (await pipe.exec()) ?? []) if (typeof raw === 'string') entries.push(JSON.parse(raw) as LedgerEntry);
    }
  }
  const events: AnyEvent[] = (await bus.history({ limit: 10_000_000 })).map((s) => s.event);
  const { byId, byCorrelation, duplicateIds } = indexEvents(events);
  const streamInfos = await Promise.all(bus.streams.map(async (s) => fieldsOf(await redis.xinfo('STREAM', s))));
  const deadLetters = await bus.deadLetters(1000);
  const notices: AlertNotice[] = [];
  for (const [id, fields] of (await redis.xrange(ak.alertsStream, '-', '+')) as Array<[string, string[]]>) {
    const n = parseAlertEntry(id, fields);
    if (n) notices.push(n);
  }

  // ---- checks -------------------------------------------------------------------------------
  const unexpected = ctx.exits.filter((e) => !e.expected);
  const notAlive = [...ctx.procs.values(), ...ctx.redisProcs].filter((p) => !p.alive()).map((p) => p.name);
  checks.push(
    result(
      'no process crashed: only the killed ones exited, and every process is running at the end',
      [...unexpected.map((e) => `${e.name}#${e.generation} exited unexpectedly (${e.signal ?? `code ${e.code}`})`), ...notAlive.map((n) => `${n} is not running at the end`)],
      `${ctx.exits.length} exits, all ${ctx.exits.length - unexpected.length === ctx.exits.length ? 'by the suite' : `but ${unexpected.length} by the suite`}: ${ctx.exits.map((e) => `${e.name} ${e.signal ?? e.code}`).join(', ')}`,
    ),
  );
  checks.push(
    result(
      'every SIGKILLed worker restarted and became ready',
      [...WORKERS.filter((w) => !restarts.some((r) => r.name === w)).map((w) => `${w} was never killed`), ...restarts.filter((r) => !r.ready).map((r) => `${r.name} not ready ${READY_TIMEOUT_MS} ms after its restart`)],
      restarts.map((r) => `${r.name} ${r.ms} ms`).join(', '),
    ),
  );
  checks.push(
    result(
      'Redis restart: every service reconnected without exiting (/readyz 200) and requests kept succeeding',
      [
        ...(!redisRestart ? ['Redis was not restarted'] : []),
        ...(redisRestart?.services ?? []).filter((s) => !s.alive || !s.ready).map((s) => `${s.name} ${s.alive ? 'not ready' : 'exited'} after the Redis restart`),
        ...(repliesAfterRedis === 0 ? ['no reply to a request sent after Redis came back'] : []),
      ],
      redisRestart ? `down ${redisRestart.downMs} ms; ready again: ${redisRestart.services.map((s) => `${s.name} ${s.ms} ms`).join(', ')}; ${repliesAfterRedis} replies after` : 'not run',
    ),
  );
  checks.push(checkOutcomes(outcomes, load.requestsSent, DEADLINE_MS + 2_000));
  {
    // The requests a SIGKILLed worker was holding: BullMQ must run their jobs again within the deadline.
    const problems: string[] = [];
    const parts: string[] = [];
    for (const k of kills.filter((x) => x.name === 'chat-workflow' || x.name === 'vision')) {
      const kind = k.name === 'vision' ? 'vision' : 'chat';
      const held = outcomes.filter((o) => o.kind === kind && o.sentAt < k.at && o.doneAt > k.at);
      const replied = held.filter((o) => o.status !== undefined && o.status < 300).length;
      const timedOut = held.filter((o) => o.status === 504 || o.timedOut);
      for (const o of timedOut) problems.push(`${kind} request ${o.id}, in flight when ${k.name} was killed, timed out instead of being run again`);
      parts.push(`${k.name}: ${held.length} in flight, ${replied} replies, ${held.length - replied - timedOut.length} classified provider errors, ${timedOut.length} timed out`);
    }
    checks.push(result('requests in flight at a worker SIGKILL were run again and answered within their deadline', problems, parts.join('; ')));
  }
  checks.push(result('the system drained and settled (queues empty, consumer groups caught up, ledger still)', settled ? [] : [waitingFor], `${settleMs} ms`));

  const money = reconcile(calls, entries, outcomes, kills, new Date());
  {
    // Analytics counted every cost.recorded once, through a SIGKILL and the Redis restart.
    const ledgerMicros = entries.reduce((a, e) => a + e.amount_micros, 0);
    const oldest = entries.reduce((a, e) => Math.min(a, Date.parse(e.occurred_at)), Date.now());
    const q = await new AnalyticsReader(redis, ns).query({ metrics: ['cost_micros', 'requests'], group_by: [], filters: {}, from: oldest - 60_000, to: Date.now() + 1, granularity: 'hour', limit: 1 });
    const counted = Number(q.groups[0]?.totals.cost_micros ?? 0);
    checks.push(
      result(
        'analytics cost equals the ledger to the micro-dollar (after a SIGKILL of analytics and the Redis restart)',
        counted === ledgerMicros ? [] : [`analytics ${counted} micros, ledger ${ledgerMicros} micros`],
        `analytics ${counted} micros over ${q.groups[0]?.totals.requests ?? 0} requests = ledger ${ledgerMicros} micros`,
      ),
    );
  }
  const unrecordableCalls = money.unrecordable.length;
  const statsConsistent = stubLog.enabled && calls.length === stubStats.totals.successes;
  checks.push(
    result(
      'ledger total equals the provider-side billed calls (stub), priced per call, to the micro-dollar',
      [
        ...(money.ledgerMicros + money.unrecordableMicros !== money.stubMicros
          ? [`ledger ${money.ledgerMicros} micros${unrecordableCalls ? ` + unrecordable ${money.unrecordableMicros}` : ''}, but the stub-billed calls price to ${money.stubMicros} micros (difference ${money.ledgerMicros + money.unrecordableMicros - money.stubMicros})`]
          : []),
        ...(!statsConsistent ? [`the stub's call log has ${calls.length} calls (enabled: ${stubLog.enabled}) but its stats count ${stubStats.totals.successes} billed`] : []),
      ],
      `ledger ${money.ledgerMicros} micros ($${(money.ledgerMicros / 1e6).toFixed(6)}) = ${money.stubCalls} billed calls ${money.stubMicros} micros` +
        (unrecordableCalls ? ` - ${unrecordableCalls} unrecordable at a SIGKILL (${money.unrecordableMicros} micros)` : ''),
    ),
  );
  checks.push(
    result(
      'every billed call is in the ledger exactly once, request by request (provider, model, units)',
      money.problems,
      `${money.stubCalls} billed calls for ${money.requestsBilled} requests (${money.requestsBilledTwice} billed twice: jobs run again after a SIGKILL), ` +
        `${money.ledgerBilledEntries} billed ledger entries (+${money.ledgerCachedEntries} cache hits at $0)` +
        (unrecordableCalls ? `; ${unrecordableCalls} unrecordable, listed below` : ''),
    ),
  );
  {
    const problems: string[] = [];
    const days = new Set(entries.map((e) => e.occurred_at.slice(0, 10)));
    let total = 0;
    let count = 0;
    let running = 0;
    for (const day of days) {
      const agg = await ledgerReader.fields('day', day);
      total += agg.get('total') ?? 0;
      count += agg.get('count') ?? 0;
      running += Number((await redis.hget(lk.day(day), 'total')) ?? 0);
    }
    const sum = entries.reduce((n, e) => n + e.amount_micros, 0);
    const index = await ledgerReader.count();
    if (total !== sum) problems.push(`daily aggregates total ${total} micros, entries sum to ${sum}`);
    if (running !== sum) problems.push(`daily running totals (what budgets see) ${running} micros, entries sum to ${sum}`);
    if (count !== entries.length) problems.push(`daily aggregates count ${count} entries, ${entries.length} stored`);
    if (index !== entries.length) problems.push(`index has ${index} members, ${entries.length} entries stored`);
    // Each project's day detail (in its tenant shard) adds up to the entries too, and no entry was
    // left between the ledger's two steps.
    let byProject = 0;
    for (const project of new Set(entries.map((e) => e.project_id))) {
      for (const day of days) byProject += (await ledgerReader.fields('day', day, { project })).get('total') ?? 0;
    }
    if (byProject !== sum) problems.push(`projects' daily detail totals ${byProject} micros, entries sum to ${sum}`);
    const pending = await ledgerReader.pendingCount();
    if (pending !== 0) problems.push(`${pending} entries still pending between the ledger's steps`);
    checks.push(result('ledger aggregates and index agree with its entries', problems, `${entries.length} entries over ${days.size} day(s)`));
  }

  checks.push(checkAlertDuplicates(notices));
  checks.push(checkAlertCoverage(notices, budgets, entries));
  checks.push(checkHardBudgets(budgets, entries));
  checks.push(checkWebhooks(notices, deliveries));

  {
    const problems: string[] = [];
    for (const [i, info] of streamInfos.entries()) {
      const maxDeleted = String(info['max-deleted-entry-id'] ?? '0-0');
      if (maxDeleted !== '0-0') problems.push(`bus partition ${i} was trimmed (max deleted id ${maxDeleted}): history is incomplete`);
    }
    const added = streamInfos.reduce((n, info) => n + Number(info['entries-added']), 0);
    if (added !== events.length) problems.push(`${added} entries were added to the bus streams but ${events.length} decode as events`);
    const usages = [...byId.values()].filter((e): e is Extract<AnyEvent, { type: 'usage.recorded' }> => e.type === 'usage.recorded');
    const entryById = new Map(entries.map((e) => [e.entry_id, e]));
    for (const u of usages) {
      if (!entryById.has(`le_${u.id}`)) problems.push(`usage.recorded ${u.id} (${u.correlation_id}) has no ledger entry`);
      if (!byId.has(`cost-${u.id}`)) problems.push(`usage.recorded ${u.id} (${u.correlation_id}) has no cost.recorded`);
    }
    for (const e of entries) if (!byId.has(e.usage_event_id)) problems.push(`ledger entry ${e.entry_id} has no usage.recorded in the history`);
    for (const n of notices) {
      if (n.alert.kind === 'cost' && !byId.has(`alert-${n.alert.alert_id}-${n.alert.state}`)) problems.push(`alert ${n.alert.alert_id} ${n.alert.state} is not on the bus as cost.threshold_exceeded`);
    }
    for (const d of deadLetters) problems.push(`dead letter (${d.group}/${d.handler}): ${d.reason.slice(0, 160)}`);
    checks.push(
      result(
        'no event missing: usage -> ledger entry -> cost.recorded, alert notices on the bus, nothing trimmed or dead-lettered',
        problems,
        `${events.length} events (${usages.length} usage.recorded, ${duplicateIds} redelivered copies of an id), ${deadLetters.length} dead letters`,
      ),
    );
  }
  checks.push(checkReplyEvents(outcomes, byCorrelation));

  // ---- report -------------------------------------------------------------------------------
  process.stdout.write('\n');
  console.table([
    {
      requests: summary.sent,
      replies: summary.replies,
      'classified errors': summary.sent - summary.replies - summary.transport - summary.timedOut,
      'p50 ms': summary.p50,
      'p99 ms': summary.p99,
      'stub billed calls': money.stubCalls,
      'ledger entries': entries.length,
      'ledger $': (money.ledgerMicros / 1e6).toFixed(6),
      'alert notices': notices.length,
      events: events.length,
      'unrecordable calls': unrecordableCalls,
      'kills+restarts': restarts.length,
    },
  ]);
  console.table(Object.entries(summary.errors).sort((a, b) => b[1] - a[1]).map(([error, count]) => ({ error, count })));
  const faults = stubStats.totals.faults;
  process.stdout.write(`stub: ${stubStats.totals.requests} provider calls, ${stubStats.totals.successes} billed, faults ${JSON.stringify(faults)}, ${stubStats.totals.aborted} aborted by the caller\n\n`);
  console.table(checks.map((c) => ({ check: c.name, result: c.ok ? 'PASS' : 'FAIL', detail: c.detail.slice(0, 160) })));
  if (unrecordableCalls > 0) {
    process.stdout.write(
      `\nUnrecordable: ${unrecordableCalls} billed calls have no usage event because the worker that made them was SIGKILLed while holding them\n` +
        `(billed between ${KILL_WINDOW.beforeMs} ms before and ${KILL_WINDOW.afterMs} ms after the kill, for a request in flight then). No design that records\n` +
        `usage in the process receiving the reply can record these; only provider-side usage reconciliation could. Every other billed call is matched.\n` +
        money.unrecordable.map((u) => `  - ${u.request}: ${u.call}, billed ${u.offsetMs >= 0 ? '+' : ''}${u.offsetMs} ms from the kill`).join('\n') +
        '\n',
    );
  }
  for (const c of checks.filter((x) => !x.ok)) {
    process.stdout.write(`\nFAIL: ${c.name}\n  ${c.detail}\n${(c.problems ?? []).map((p) => `  - ${p}`).join('\n')}\n`);
  }
  const failed = checks.filter((c) => !c.ok).length;
  try {
    const dir = join(root, 'test-artifacts', 'reliability');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'last-run.json'),
      JSON.stringify({ at: new Date().toISOString(), load_ms: LOAD_MS, concurrency: CONCURRENCY, summary, stub: stubStats.totals, money, redisRestart, restarts, settleMs, timeline, checks }, null, 2),
    );
  } catch {
    // best effort
  }
  // Trails of the requests a failing check names: their outcome and every event they caused.
  const named = new Set<string>();
  for (const c of checks.filter((x) => !x.ok)) for (const p of c.problems ?? []) for (const m of p.matchAll(/rel-[0-9a-f-]{36}/g)) named.add(m[0]);
  for (const id of [...named].slice(0, 6)) {
    const o = outcomes.find((x) => x.id === id);
    const rel = (ms: number) => `+${((ms - t0) / 1000).toFixed(3)}s`;
    process.stdout.write(`\n${id}: ${o ? `${o.kind}, sent ${rel(o.sentAt)}, answered ${rel(o.doneAt)} with ${o.status ?? o.transportError ?? 'nothing'}` : 'not sent by the load'}\n`);
    for (const c of calls.filter((x) => x.ask === o?.ask)) process.stdout.write(`  ${rel(c.at)}  billed ${c.provider}/${c.model} in=${c.promptTokens} out=${c.completionTokens} images=${c.images}\n`);
    for (const e of byCorrelation.get(id) ?? []) {
      const units = e.type === 'usage.recorded' ? ` ${JSON.stringify(e.data.units)}` : '';
      process.stdout.write(`  ${rel(Date.parse(e.occurred_at))}  ${e.type} from ${e.source}${units}\n`);
    }
  }
  process.stdout.write(`\nkills: ${kills.map((k) => `${k.name} ${rel0(k.at)}`).join(', ')}\n`);
  // A queue worker that stopped fetching (seen after a cluster master restart) is replaced; say so.
  const replaced = readdirSync(ctx.logDir).flatMap((f) => readFileSync(join(ctx.logDir, f), 'utf8').split('\n').filter((l) => l.includes('stopped fetching and was replaced')).map((l) => `${f}: ${l.slice(0, 300)}`));
  process.stdout.write(`queue workers replaced after they stopped fetching: ${replaced.length}\n${replaced.map((l) => `  ${l}\n`).join('')}`);
  if (failed > 0) {
    process.stdout.write('\nRecent output of the services:\n');
    for (const p of [...ctx.procs.values()]) for (const line of p.recentOutput().slice(-8)) process.stdout.write(`  ${line}\n`);
  }
  process.stdout.write(`\n${checks.length - failed} passed, ${failed} failed\n`);
  return failed;
}

process.once('SIGINT', () => {
  process.stdout.write('\ninterrupted; stopping everything\n');
  void cleanup(false).finally(() => {
    process.stdout.write('0 passed, 1 failed\n');
    process.exit(130);
  });
});
process.once('SIGTERM', () => {
  void cleanup(false).finally(() => process.exit(143));
});

main()
  .then(
    async (failed) => {
      await cleanup(failed > 0 || process.env.RELIABILITY_KEEP_LOGS === '1');
      process.exit(failed > 0 ? 1 : 0);
    },
    async (err: unknown) => {
      process.stdout.write(`\nreliability suite aborted: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      for (const p of [...ctx.procs.values()]) for (const line of p.recentOutput().slice(-8)) process.stdout.write(`  ${line}\n`);
      await cleanup(true);
      process.stdout.write('0 passed, 1 failed\n');
      process.exit(1);
    },
  );
