/**
 * `pnpm test:compose`: the container stack, built and run end to end with Docker Compose.
 *
 * Makes sure a Docker engine and Compose v2 answer (installing Debian's packages and starting
 * dockerd when not) and that the base images exist (pulled, or built from Debian's packages),
 * then runs `docker compose --profile stub up --build -d` as its own compose project and checks
 * the running stack: every container healthy, non-root and read-only; the gateway on
 * 127.0.0.1:8080; chats through the stock openai SDK (plain and streamed) and a vision request
 * answered and priced in the ledger, read back through the costs API; three chat-workflow
 * replicas sharing 200 requests; a replica `docker kill`ed under load losing no request and no
 * ledger entry; Redis restarted with its ledger intact; `down -v` leaving nothing behind.
 * Prints each step with its time, then build times and image sizes; exits 1 on any failure.
 *
 * Bounded by COMPOSE_TEST_TIMEOUT_SECONDS (900). Options: `--cold` first removes this suite's images (tollgate/*, tollgate-base/*) so the run
 * starts without them; `--keep` leaves the stack up at the end (no `down -v` check).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import OpenAI from 'openai';
import { ApiKeyStore, createRedis, hashTagged, type LedgerEntry, price, queuePrefix, QUEUES, scanKeys, unitNamespace } from '../../packages/shared/src';
import type { BilledCall } from '../../packages/stub-llm/src';
import { checkOutcomes, type CheckResult, reconcile, result, summarizeOutcomes } from '../reliability/checks';
import { LoadGenerator, uniquePng } from '../reliability/load';
import { ensureEngine, NoContainersError } from './engine';
import { CommandError, must, run, seconds, sleep } from './exec';
import { BASE_IMAGES, ensureBaseImages } from './images';

const root = join(__dirname, '..', '..');
const PROJECT = 'tollgate-compose-test';
const GATEWAY = 'http://127.0.0.1:8080';
const GATEWAY_PORT = 8080;
const PREFIX = hashTagged('tollgate'); // the services' default TOLLGATE_PREFIX
const DEADLINE_MS = 60_000; // the gateway's default REQUEST_DEADLINE_MS
const artifacts = join(root, 'test-artifacts', 'compose');
const args = new Set(process.argv.slice(2));
const COLD = args.has('--cold');
const KEEP = args.has('--keep');
/** The whole run's bound (a cold run on 2 cores takes about 6 minutes); past it the stack is taken down and the run fails. */
const DEADLINE_S = Number(process.env.COMPOSE_TEST_TIMEOUT_SECONDS) > 0 ? Number(process.env.COMPOSE_TEST_TIMEOUT_SECONDS) : 900;

type Redis = ReturnType<typeof createRedis>;

// ---------------------------------------------------------------------------------------------
// Output

const t0 = Date.now();
const since = () => `${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s`;
const say = (line: string) => console.log(`[compose ${since()}] ${line}`);
const checks: CheckResult[] = [];
const timings: Array<[string, number]> = [];

function record(check: CheckResult): void {
  checks.push(check);
  say(`${check.ok ? 'PASS' : 'FAIL'} ${check.name}: ${check.detail}`);
  for (const p of check.problems ?? []) say(`       - ${p}`);
}

async function phase<T>(name: string, fn: () => Promise<T>): Promise<T> {
  say(`${name} ...`);
  const started = Date.now();
  const value = await fn();
  timings.push([name, Date.now() - started]);
  say(`${name}: done in ${seconds(Date.now() - started)}`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Compose

// Until the ports are chosen: `down` needs the file to interpolate, not the values.
let composeEnv: NodeJS.ProcessEnv = { ...process.env, STUB_TEST_PORT: '4010' };
const FILES = ['-f', join(root, 'docker-compose.yml'), '-f', join(root, 'scripts/compose/compose.test.yml')];
const composeArgs = (...rest: string[]) => ['compose', '-p', PROJECT, ...FILES, '--profile', 'stub', ...rest];
const compose = (rest: string[], timeoutMs = 120_000, logName?: string) =>
  must('docker', composeArgs(...rest), { env: composeEnv, cwd: root, timeoutMs, ...(logName && { logFile: join(artifacts, logName) }) });

interface Container {
  ID: string;
  Name: string;
  Service: string;
  State: string;
  Health: string;
}

async function containers(): Promise<Container[]> {
  const out = (await compose(['ps', '-a', '--format', 'json'], 30_000)).stdout.trim();
  if (!out) return [];
  // Compose 2.21+ prints one JSON object per line; older ones one array.
  return out.startsWith('[') ? (JSON.parse(out) as Container[]) : out.split('\n').map((l) => JSON.parse(l) as Container);
}

/** Waits until every container runs and reports healthy; names the laggards (and their logs) if not. */
async function waitHealthy(expect: number, timeoutMs = 150_000): Promise<Container[]> {
  const until = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const list = await containers();
    const healthy = list.filter((c) => c.State === 'running' && c.Health === 'healthy');
    const line = `${healthy.length}/${expect} healthy${list.length > healthy.length ? ` (waiting: ${list.filter((c) => !healthy.includes(c)).map((c) => `${c.Name} ${c.State}${c.Health ? `/${c.Health}` : ''}`).join(', ')})` : ''}`;
    if (line !== last) say(`  ${line}`);
    last = line;
    if (healthy.length === expect && list.length === expect) return list;
    if (Date.now() > until) {
      for (const c of list.filter((x) => !healthy.includes(x))) {
        const logs = await run('docker', ['logs', '--tail', '30', c.ID], { timeoutMs: 15_000 });
        say(`  ${c.Name} (${c.State}/${c.Health || 'no health'}), its last log lines:\n${`${logs.stdout}${logs.stderr}`.trim()}`);
      }
      throw new Error(`not every container became healthy within ${timeoutMs / 1000} s: ${line}`);
    }
    await sleep(1_000);
  }
}

// ---------------------------------------------------------------------------------------------
// Ports

function portFree(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(null)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function whoHolds(port: number): Promise<string> {
  const r = await run('sh', ['-c', `ss -ltnpH 'sport = :${port}' 2>/dev/null | head -3`], { timeoutMs: 5_000 });
  return r.stdout.trim() || 'a process ss does not name';
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface Keys {
  user: string;
  admin: string;
  /** For the 200-request scale check and the load under the kill: each key has its own rate limit. */
  scale: string;
  load: string[];
}

async function getJson(path: string, key: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${GATEWAY}${path}`, { headers: { authorization: `Bearer ${key}` }, signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    return { status: res.status, body: text };
  }
}

/** Every ledger entry the key may see, through GET /v1/costs/entries, page by page. */
async function ledgerEntries(key: string, query = ''): Promise<LedgerEntry[]> {
  const out: LedgerEntry[] = [];
  let cursor: string | null = null;
  do {
    const r = await getJson(`/v1/costs/entries?limit=1000${query}${cursor ? `&cursor=${cursor}` : ''}`, key);
    if (r.status !== 200) throw new Error(`GET /v1/costs/entries answered ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
    out.push(...(r.body.entries as LedgerEntry[]));
    cursor = r.body.next_cursor as string | null;
  } while (cursor);
  return out;
}

/** Polls until `want` holds for the entries (the ledger is written off the bus, after the reply). */
async function entriesWhen(key: string, want: (e: LedgerEntry[]) => boolean, timeoutMs = 30_000): Promise<LedgerEntry[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const entries = await ledgerEntries(key);
    if (want(entries) || Date.now() > until) return entries;
    await sleep(500);
  }
}

const expectedMicros = (e: LedgerEntry) => price({ provider: e.provider, model: e.model, units: e.units }, { at: e.occurred_at }).amount_micros;

async function stubCalls(stubPort: number): Promise<BilledCall[]> {
  const res = await fetch(`http://127.0.0.1:${stubPort}/_stub/calls`, { signal: AbortSignal.timeout(15_000) });
  const body = (await res.json()) as { enabled: boolean; calls: BilledCall[] };
  if (!body.enabled) throw new Error('the stub keeps no call log (STUB_CALL_LOG is not 1 in its container)');
  return body.calls;
}

// ---------------------------------------------------------------------------------------------
// Checks

async function checkContainers(list: Container[]): Promise<void> {
  const problems: string[] = [];
  const seen: string[] = [];
  for (const c of list) {
    const inspect = JSON.parse((await must('docker', ['inspect', c.ID], { timeoutMs: 15_000 })).stdout)[0];
    const uid = (await run('docker', ['exec', c.ID, 'id', '-u'], { timeoutMs: 15_000 })).stdout.trim();
    const write = await run('docker', ['exec', c.ID, 'sh', '-c', 'echo x > /.tollgate-write-probe'], { timeoutMs: 15_000 });
    const tmp = await run('docker', ['exec', c.ID, 'sh', '-c', 'echo x > /tmp/.probe && rm /tmp/.probe'], { timeoutMs: 15_000 });
    if (!/^\d+$/.test(uid) || uid === '0') problems.push(`${c.Name} runs as uid ${uid || '?'}`);
    if (!inspect.HostConfig.ReadonlyRootfs || write.code === 0) problems.push(`${c.Name}: the root file system is writable`);
    if (tmp.code !== 0) problems.push(`${c.Name}: /tmp is not writable (${tmp.stderr.trim()})`);
    if (!(inspect.HostConfig.CapDrop ?? []).includes('ALL')) problems.push(`${c.Name} keeps its capabilities`);
    seen.push(`${c.Service} uid ${uid}`);
  }
  record(result('every container runs as a non-root user on a read-only root file system (writable /tmp), without capabilities', problems, [...new Set(seen)].join(', ')));
}

async function checkGateway(): Promise<void> {
  const problems: string[] = [];
  const details: string[] = [];
  for (const path of ['/healthz', '/readyz']) {
    const res = await fetch(`${GATEWAY}${path}`, { signal: AbortSignal.timeout(10_000) }).catch((e: Error) => e);
    if (res instanceof Error) problems.push(`GET ${path}: ${res.message}`);
    else {
      details.push(`${path} ${res.status}`);
      if (res.status !== 200) problems.push(`GET ${path} answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
    }
  }
  record(result(`the gateway answers on ${GATEWAY}`, problems, details.join(', ')));
}

async function checkSdkAndLedger(keys: Keys): Promise<void> {
  const problems: string[] = [];
  const client = new OpenAI({ apiKey: keys.user, baseURL: `${GATEWAY}/v1`, maxRetries: 0, timeout: 70_000 });
  const ids = { plain: `cmp-plain-${randomUUID()}`, stream: `cmp-stream-${randomUUID()}`, vision: `cmp-vision-${randomUUID()}` };

  const plain = await client.chat.completions.create(
    { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Say hello to the compose stack.' }] },
    { headers: { 'x-request-id': ids.plain } },
  );
  const plainText = plain.choices[0]?.message.content ?? '';
  if (!plainText) problems.push('the plain chat completion has no content');
  if (!(plain.usage && plain.usage.total_tokens > 0)) problems.push('the plain chat completion reports no usage');

  const stream = await client.chat.completions.create(
    { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Stream a few words from the compose stack.' }], stream: true, stream_options: { include_usage: true } },
    { headers: { 'x-request-id': ids.stream } },
  );
  let streamed = '';
  let chunks = 0;
  let streamUsage = 0;
  for await (const chunk of stream) {
    chunks++;
    streamed += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) streamUsage = chunk.usage.total_tokens;
  }
  if (!streamed || chunks < 2) problems.push(`the streamed completion gave ${chunks} chunks and ${streamed.length} characters`);
  if (streamUsage <= 0) problems.push('the streamed completion ends without a usage chunk');

  const visionRes = await fetch(`${GATEWAY}/v1/vision`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.user}`, 'x-request-id': ids.vision },
    body: JSON.stringify({ image_base64: uniquePng().toString('base64'), prompt: 'What is in this picture?' }),
    signal: AbortSignal.timeout(70_000),
  });
  const vision = (await visionRes.json()) as { analysis?: string };
  if (visionRes.status !== 200 || !vision.analysis) problems.push(`POST /v1/vision answered ${visionRes.status}: ${JSON.stringify(vision).slice(0, 200)}`);

  const wanted = Object.values(ids);
  const entries = await entriesWhen(keys.user, (list) => wanted.every((id) => list.some((e) => e.request_id === id)));
  const details: string[] = [];
  for (const [kind, id] of Object.entries(ids)) {
    const mine = entries.filter((e) => e.request_id === id);
    if (mine.length !== 1) {
      problems.push(`${kind} request ${id} has ${mine.length} ledger entries (want 1)`);
      continue;
    }
    const e = mine[0]!;
    if (e.amount_micros <= 0) problems.push(`${kind}: the ledger entry costs ${e.amount_micros} micros`);
    if (e.amount_micros !== expectedMicros(e)) problems.push(`${kind}: the ledger says ${e.amount_micros} micros, the price table ${expectedMicros(e)}`);
    details.push(`${kind} ${e.provider}/${e.model} ${e.amount_micros} µ$`);
  }
  const summary = await getJson('/v1/costs/summary?period=day', keys.user);
  const total = entries.reduce((n, e) => n + e.amount_micros, 0);
  const summaryMicros = summary.body?.total?.micros ?? summary.body?.total;
  if (summary.status !== 200 || summaryMicros !== total) problems.push(`GET /v1/costs/summary: total ${JSON.stringify(summary.body?.total)}, the entries sum to ${total} micros`);
  record(
    result(
      'a chat through the stock openai SDK (plain and streamed) and a vision request are answered and priced in the ledger (costs API)',
      problems,
      `${plainText.length}-character reply, ${chunks} stream chunks, vision analysis ${vision.analysis?.length ?? 0} characters; ${details.join(', ')}; day total ${summaryMicros} µ$`,
    ),
  );
}

/**
 * The key base of each partition of the chat queue (`<prefix>:chat`). The containers read
 * QUEUE_PARTITIONS from .env, so the partitions are found rather than assumed: every partition a
 * job was ever added to has an event stream.
 */
async function chatQueueBases(redis: Redis): Promise<string[]> {
  const bases = new Set([`${queuePrefix(PREFIX)}:${QUEUES.chat}`]);
  const partitionEvents = `${queuePrefix(unitNamespace(PREFIX, 'q:*'))}:${QUEUES.chat}:events`;
  for await (const keys of scanKeys(redis, partitionEvents)) for (const key of keys) bases.add(key.slice(0, -':events'.length));
  return [...bases];
}

/** The replica that ran each of these requests' chat jobs: BullMQ keeps the worker's name on the job. */
async function servedBy(redis: Redis, requestIds: Set<string>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const base of await chatQueueBases(redis)) {
    const ids = await redis.zrange(`${base}:completed`, '0', '-1');
    const pipe = redis.pipeline();
    for (const id of ids) pipe.hmget(`${base}:${id}`, 'data', 'pb');
    const rows = (await pipe.exec()) ?? [];
    for (const [err, row] of rows) {
      if (err) throw err;
      const [data, pb] = row as [string | null, string | null];
      if (!data) continue;
      const requestId = (JSON.parse(data) as { request_id?: string }).request_id;
      if (requestId && requestIds.has(requestId)) out.set(requestId, pb ?? '(none)');
    }
  }
  return out;
}

async function chatReplicas(): Promise<Array<{ id: string; hostname: string }>> {
  const ids = (await compose(['ps', '-q', 'chat-workflow'], 30_000)).stdout.trim().split('\n').filter(Boolean);
  const out: Array<{ id: string; hostname: string }> = [];
  for (const id of ids) out.push({ id, hostname: (await must('docker', ['inspect', '-f', '{{.Config.Hostname}}', id])).stdout.trim() });
  return out;
}

async function checkScale(keys: Keys, redis: Redis, total: number): Promise<void> {
  await phase('scale chat-workflow to 3', async () => {
    await compose(['up', '-d', '--no-build', '--scale', 'chat-workflow=3'], 180_000, 'up.log');
    await waitHealthy(total + 2);
  });
  const replicas = await chatReplicas();
  const ids = Array.from({ length: 200 }, () => `cmp-scale-${randomUUID()}`);
  const statuses = new Map<number, number>();
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const res = await fetch(`${GATEWAY}/v1/chat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.scale}`, 'x-request-id': id },
        body: JSON.stringify({ message: `Scale check ${id}` }),
        signal: AbortSignal.timeout(DEADLINE_MS + 10_000),
      }).catch(() => undefined);
      await res?.text();
      statuses.set(res?.status ?? 0, (statuses.get(res?.status ?? 0) ?? 0) + 1);
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: 20 }, worker));
  const ms = Date.now() - started;
  const served = await servedBy(redis, new Set(ids));
  const perReplica = replicas.map((r) => ({ ...r, jobs: [...served.values()].filter((pb) => pb.startsWith(`chat-workflow-${r.hostname}-`)).length }));
  const problems: string[] = [];
  if (replicas.length !== 3) problems.push(`${replicas.length} chat-workflow replicas run (want 3)`);
  if ((statuses.get(200) ?? 0) !== ids.length) problems.push(`answers: ${JSON.stringify(Object.fromEntries(statuses))} (want 200 x 200)`);
  if (served.size !== ids.length) problems.push(`${served.size} of ${ids.length} requests have a completed chat job naming its worker`);
  for (const r of perReplica) if (r.jobs === 0) problems.push(`replica ${r.hostname} served none of the ${ids.length} requests`);
  const unattributed = served.size - perReplica.reduce((n, r) => n + r.jobs, 0);
  if (unattributed > 0) problems.push(`${unattributed} jobs name a worker that is none of the replicas`);
  record(
    result(
      '--scale chat-workflow=3: each replica serves some of 200 requests',
      problems,
      `200 requests in ${seconds(ms)} (20 at a time); jobs per replica (BullMQ processedBy): ${perReplica.map((r) => `${r.hostname} ${r.jobs}`).join(', ')}`,
    ),
  );
}

/** Chat jobs running right now, per replica host name (from the active list and each job's `processedBy`). */
async function activeByReplica(redis: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const base of await chatQueueBases(redis)) {
    const ids = await redis.lrange(`${base}:active`, 0, -1);
    const pipe = redis.pipeline();
    for (const id of ids) pipe.hget(`${base}:${id}`, 'pb');
    for (const [err, pb] of (await pipe.exec()) ?? []) {
      const host = !err && typeof pb === 'string' ? /^chat-workflow-([^-]+)-/.exec(pb)?.[1] : undefined;
      if (host) out.set(host, (out.get(host) ?? 0) + 1);
    }
  }
  return out;
}

/** Requests the kill check sends at most (12 at a time for 20 s). */
const KILL_LOAD_MAX = 5_000;

async function checkKill(keys: Keys, redis: Redis, stubPort: number): Promise<void> {
  const replicas = await chatReplicas();
  const load = new LoadGenerator({ gatewayUrl: GATEWAY, keys: keys.load, concurrency: 12, durationMs: 20_000, maxRequests: KILL_LOAD_MAX, visionShare: 0, clientTimeoutMs: DEADLINE_MS + 10_000 });
  say('  load: 12 concurrent chats for 20 s; after 5 s, docker kill the replica holding the most running jobs');
  load.start();
  await sleep(5_000);
  // The kill proves something only if the victim holds jobs: wait for a moment it does.
  let victim = replicas[0]!;
  let held = 0;
  for (let i = 0; i < 50 && held === 0; i++) {
    const active = await activeByReplica(redis);
    for (const r of replicas) {
      if ((active.get(r.hostname) ?? 0) > held) {
        victim = r;
        held = active.get(r.hostname)!;
      }
    }
    if (held === 0) await sleep(100);
  }
  const inFlight = load.pending;
  const killAt = Date.now();
  await must('docker', ['kill', victim.id], { timeoutMs: 30_000 });
  const killedAt = Date.now();
  say(`  killed ${victim.hostname} holding ${held} running chat jobs (${inFlight} requests in flight); docker kill took ${killedAt - killAt} ms`);
  await load.done();
  // Drained: every request answered; now the ledger must stop moving.
  const asks = new Set(load.outcomes.map((o) => o.ask));
  const ids = new Set(load.outcomes.map((o) => o.id));
  let entries: LedgerEntry[] = [];
  let calls: BilledCall[] = [];
  for (let stable = 0, last = -1, i = 0; stable < 3 && i < 60; i++) {
    calls = (await stubCalls(stubPort)).filter((c) => asks.has(c.ask));
    entries = (await ledgerEntries(keys.admin)).filter((e) => ids.has(e.correlation_id));
    const n = entries.length * 1_000_000 + calls.length;
    stable = n === last ? stable + 1 : 0;
    last = n;
    await sleep(1_000);
  }
  const outcomes = checkOutcomes(load.outcomes, load.requestsSent, DEADLINE_MS);
  const s = summarizeOutcomes(load.outcomes, load.requestsSent);
  const rec = reconcile(calls, entries, load.outcomes, [{ name: 'chat-workflow', at: killAt, doneAt: killedAt }], new Date());
  const problems = [...(outcomes.problems ?? []), ...rec.problems];
  if (held === 0) problems.push('the killed replica held no running job at the kill, so the kill proved nothing');
  if (s.replies !== load.requestsSent) problems.push(`${load.requestsSent - s.replies} of ${load.requestsSent} requests were not answered with a reply: ${JSON.stringify(s.errors)}`);
  const answeredWithoutEntry = load.outcomes.filter((o) => o.status === 200 && !entries.some((e) => e.correlation_id === o.id));
  for (const o of answeredWithoutEntry.slice(0, 5)) problems.push(`request ${o.id} was answered but has no ledger entry`);
  const state = (await run('docker', ['inspect', '-f', '{{.State.Status}} (restarts: {{.RestartCount}})', victim.id], { timeoutMs: 15_000 })).stdout.trim();
  record(
    result(
      'a chat-workflow replica killed under load (docker kill) loses no request and no ledger entry',
      problems,
      `${load.requestsSent} requests, ${inFlight} in flight at the kill, ${held} running on the killed replica: ${s.replies} replies, p50 ${s.p50} ms, max ${s.max} ms; ` +
        `${rec.stubCalls} calls billed by the provider, ${rec.ledgerBilledEntries} ledger entries, ${rec.requestsBilledTwice} requests run again after the kill, ` +
        `${rec.unrecordable.length} calls the dead replica held (billed, never reported: ${rec.unrecordableMicros} µ$); killed container now ${state}`,
    ),
  );
}

async function checkRedisRestart(keys: Keys, total: number): Promise<void> {
  const problems: string[] = [];
  const before = await ledgerEntries(keys.admin);
  const summaryBefore = await getJson('/v1/costs/summary?period=day', keys.admin);
  const aof = await compose(['exec', '-T', 'redis', 'redis-cli', 'config', 'get', 'appendonly'], 30_000);
  if (!/appendonly\s+yes/.test(aof.stdout.replace(/\n/g, ' '))) problems.push(`appendonly is not on: ${aof.stdout.trim()}`);
  const started = Date.now();
  await compose(['restart', 'redis'], 120_000);
  await waitHealthy(total);
  // The services reconnect by themselves; the gateway says so on /readyz.
  for (let i = 0; i < 60; i++) {
    const res = await fetch(`${GATEWAY}/readyz`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
    if (res?.status === 200) break;
    await sleep(500);
  }
  const restartMs = Date.now() - started;
  const after = await ledgerEntries(keys.admin);
  const summaryAfter = await getJson('/v1/costs/summary?period=day', keys.admin);
  const ids = (list: LedgerEntry[]) => list.map((e) => e.entry_id).sort().join(',');
  if (after.length !== before.length || ids(after) !== ids(before)) problems.push(`${before.length} ledger entries before the restart, ${after.length} after`);
  if (JSON.stringify(summaryAfter.body?.total) !== JSON.stringify(summaryBefore.body?.total)) {
    problems.push(`day total ${JSON.stringify(summaryBefore.body?.total)} before, ${JSON.stringify(summaryAfter.body?.total)} after`);
  }
  // And the stack still works on the restarted Redis: one more chat, priced.
  const id = `cmp-after-restart-${randomUUID()}`;
  const res = await fetch(`${GATEWAY}/v1/chat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.user}`, 'x-request-id': id },
    body: JSON.stringify({ message: 'Still there after the Redis restart?' }),
    signal: AbortSignal.timeout(DEADLINE_MS + 10_000),
  });
  await res.text();
  if (res.status !== 200) problems.push(`a chat after the restart answered ${res.status}`);
  const later = await entriesWhen(keys.admin, (list) => list.some((e) => e.request_id === id));
  if (!later.some((e) => e.request_id === id)) problems.push('the chat after the restart has no ledger entry');
  record(
    result(
      'docker compose restart redis keeps the ledger (append-only file on the volume)',
      problems,
      `${before.length} entries and day total ${summaryBefore.body?.total?.micros ?? JSON.stringify(summaryBefore.body?.total)} µ$ before and after; back in ${seconds(restartMs)}; a chat after it answered ${res.status} and was priced`,
    ),
  );
}

async function leftovers(): Promise<string[]> {
  const label = `label=com.docker.compose.project=${PROJECT}`;
  const out: string[] = [];
  for (const [kind, cmd] of [
    ['container', ['ps', '-aq', '--filter', label]],
    ['network', ['network', 'ls', '-q', '--filter', label]],
    ['volume', ['volume', 'ls', '-q', '--filter', label]],
  ] as const) {
    const ids = (await must('docker', [...cmd], { timeoutMs: 15_000 })).stdout.trim().split('\n').filter(Boolean);
    for (const id of ids) out.push(`${kind} ${id}`);
  }
  return out;
}

async function checkDown(): Promise<void> {
  await phase('docker compose down -v', () => compose(['down', '-v', '--remove-orphans'], 180_000));
  const left = await leftovers();
  record(result('docker compose down -v leaves no container, network or volume of the project', left.map((l) => `${l} is left`), left.length === 0 ? 'nothing left' : `${left.length} left`));
}

// ---------------------------------------------------------------------------------------------
// Figures

async function imageSizes(): Promise<string[]> {
  const r = await run('docker', ['system', 'df', '-v', '--format', '{{json .Images}}'], { timeoutMs: 60_000 });
  const lines: string[] = [];
  if (r.code === 0 && r.stdout.trim()) {
    const images = JSON.parse(r.stdout.trim()) as Array<{ Repository: string; Tag: string; Size: string; SharedSize: string; UniqueSize: string }>;
    for (const i of images.filter((x) => /^tollgate(-base)?\//.test(x.Repository)).sort((a, b) => a.Repository.localeCompare(b.Repository))) {
      lines.push(`${`${i.Repository}:${i.Tag}`.padEnd(32)} ${i.Size.padStart(8)}  (shared ${i.SharedSize}, own ${i.UniqueSize})`);
    }
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  mkdirSync(artifacts, { recursive: true });
  for (const f of ['build.log', 'up.log']) writeFileSync(join(artifacts, f), '');
  say(`pnpm test:compose: project ${PROJECT}, logs in ${artifacts}`);

  const engine = await phase('engine', () => ensureEngine(say));
  say(`  Docker engine ${engine.server}, Compose ${engine.compose}, builds on the ${engine.buildNetwork} network${engine.actions.length ? `; ${engine.actions.join('; ')}` : ''}`);

  // Only this project's containers, networks and volumes are ever removed (a run that died before).
  await compose(['down', '-v', '--remove-orphans'], 180_000);

  if (COLD) {
    const ours = (await must('docker', ['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', 'tollgate/*'])).stdout.trim().split('\n').filter(Boolean);
    const present = [...ours, ...BASE_IMAGES];
    say(`--cold: removing ${present.join(', ')}`);
    await run('docker', ['image', 'rm', '-f', ...present], { timeoutMs: 120_000 });
  }

  const base = await phase('base images', () => ensureBaseImages(root, engine.buildNetwork, say));
  say(`  NODE_IMAGE=${base.node.image} (${base.node.how}); REDIS_IMAGE=${base.redis.image} (${base.redis.how})`);
  const smoke = await run('docker', ['run', '--rm', '--network', 'none', base.node.image, 'node', '-e', 'process.exit(0)'], { timeoutMs: 60_000 });
  if (smoke.code !== 0) throw new NoContainersError(`a container of ${base.node.image} does not run: ${smoke.stderr.trim().split('\n').slice(-5).join(' ')}`);

  const held = await portFree(GATEWAY_PORT);
  if (held) throw new Error(`127.0.0.1:${GATEWAY_PORT} is taken (${held}) by ${await whoHolds(GATEWAY_PORT)}: the stack publishes the gateway there; stop that first`);
  const redisPort = await freePort();
  const stubPort = await freePort();
  composeEnv = { ...process.env, REDIS_PORT: String(redisPort), STUB_TEST_PORT: String(stubPort), NODE_IMAGE: base.node.image, REDIS_IMAGE: base.redis.image, BUILD_NETWORK: engine.buildNetwork };
  say(`  REDIS_PORT=${redisPort} (the host's 6379 is left alone), stub on 127.0.0.1:${stubPort}, gateway on 127.0.0.1:${GATEWAY_PORT}`);

  // BuildKit's plain progress: `#N [service stage k/n] RUN ...` opens a step, `#N DONE 12.3s` ends it.
  const stepNames = new Map<string, string>();
  const cachedIds = new Set<string>();
  let ran = 0;
  let cached = 0;
  await phase('docker compose build', () =>
    must('docker', composeArgs('--progress', 'plain', 'build'), {
      env: composeEnv,
      cwd: root,
      timeoutMs: 900_000,
      logFile: join(artifacts, 'build.log'),
      onLine: (line) => {
        const open = /^(#\d+) (\[.*)$/.exec(line);
        // Only the Dockerfile's own steps: not [internal] context loads, exports or namings.
        if (open && !stepNames.has(open[1]!) && !/^\[internal\]/.test(open[2]!) && / (RUN|COPY|FROM|WORKDIR) /.test(open[2]!)) stepNames.set(open[1]!, open[2]!);
        const hit = /^(#\d+) CACHED$/.exec(line);
        if (hit) {
          cached++;
          cachedIds.add(hit[1]!);
        }
        const done = /^(#\d+) DONE (\d+(?:\.\d+)?)s$/.exec(line);
        if (done && stepNames.has(done[1]!) && !cachedIds.has(done[1]!)) {
          ran++;
          if (Number(done[2]) >= 2) say(`  ${done[2]!.padStart(5)} s  ${stepNames.get(done[1]!)!.slice(0, 110)}`);
        }
      },
    }),
  );
  say(`  ${ran} Dockerfile steps ran, ${cached} came from the cache (the whole log: test-artifacts/compose/build.log)`);

  const total = await phase('docker compose --profile stub up --build -d, until healthy', async () => {
    await compose(['up', '--build', '-d'], 300_000, 'up.log');
    // One container per compose service of the stub profile: every services/ folder, Redis and the stub.
    const services = (await compose(['config', '--services'], 30_000)).stdout.trim().split('\n').filter(Boolean);
    const list = await waitHealthy(services.length);
    return list.length;
  });
  record(result('every container reports healthy', [], `${total} containers: ${(await containers()).map((c) => c.Service).join(', ')}`));

  const redis = createRedis(`redis://127.0.0.1:${redisPort}`, { name: 'compose-test' });
  let keys: Keys;
  try {
    const store = new ApiKeyStore(redis, PREFIX);
    const key = async (user: string, scopes: Array<'chat' | 'vision' | 'costs' | 'admin'> = ['chat', 'vision', 'costs']) =>
      (await store.create({ name: `compose test ${user}`, user_id: user, project_id: 'compose-test', scopes })).key;
    keys = {
      user: await key('compose-sdk'),
      admin: await key('compose-admin', ['admin', 'costs']),
      scale: await key('compose-scale'),
      // The kill check sends up to KILL_LOAD_MAX requests in 20 s, spread over the keys in turn:
      // enough keys that none reaches RATE_LIMIT_PER_MINUTE (600) even if all of them go.
      load: await Promise.all(Array.from({ length: Math.ceil(KILL_LOAD_MAX / 600) + 1 }, (_, i) => key(`compose-load-${i + 1}`))),
    };
    await checkContainers(await containers());
    await checkGateway();
    await phase('openai SDK chat, stream and vision, priced', () => checkSdkAndLedger(keys));
    await checkScale(keys, redis, total);
    await phase('docker kill a chat-workflow replica under load', () => checkKill(keys, redis, stubPort));
  } finally {
    redis.disconnect();
  }
  // A killed container stays down (docker counts `docker kill` as a deliberate stop); `up` brings it back.
  await phase('bring the killed replica back (up --scale chat-workflow=3)', async () => {
    await compose(['up', '-d', '--no-build', '--scale', 'chat-workflow=3'], 180_000, 'up.log');
    await waitHealthy(total + 2);
  });
  await phase('docker compose restart redis', () => checkRedisRestart(keys, total + 2));

  const sizes = await imageSizes();
  if (!KEEP) await checkDown();

  const failed = checks.filter((c) => !c.ok);
  console.log('');
  console.log('Times:');
  for (const [name, ms] of timings) console.log(`  ${name.padEnd(60)} ${seconds(ms).padStart(8)}`);
  console.log(`  ${'total'.padEnd(60)} ${seconds(Date.now() - t0).padStart(8)}`);
  console.log('Images (docker system df -v):');
  for (const line of sizes) console.log(`  ${line}`);
  console.log(`\n${checks.length - failed.length} passed, ${failed.length} failed`);
  if (failed.length > 0) process.exitCode = 1;
}

async function cleanUp(): Promise<void> {
  if (KEEP) return;
  const ps = await run('docker', composeArgs('ps', '-a', '--format', '{{.Name}} {{.State}} {{.Status}}'), { env: composeEnv, cwd: root, timeoutMs: 30_000 });
  if (ps.code === 0 && ps.stdout.trim()) {
    say(`containers at the failure:\n${ps.stdout.trim()}`);
    const logs = await run('docker', composeArgs('logs', '--no-color', '--tail', '20'), { env: composeEnv, cwd: root, timeoutMs: 60_000 });
    writeFileSync(join(artifacts, 'failure-logs.txt'), `${logs.stdout}${logs.stderr}`);
    say(`their last log lines are in ${join(artifacts, 'failure-logs.txt')}`);
  }
  await run('docker', composeArgs('down', '-v', '--remove-orphans'), { env: composeEnv, cwd: root, timeoutMs: 180_000 });
}

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(130);
    stopping = true;
    say(`${signal}: taking the stack down`);
    void cleanUp().finally(() => process.exit(130));
  });
}

setTimeout(() => {
  if (stopping) return;
  stopping = true;
  console.error(`\ncompose: FAILED: the run took longer than ${DEADLINE_S} s (COMPOSE_TEST_TIMEOUT_SECONDS); taking the stack down`);
  void cleanUp().finally(() => process.exit(1));
}, DEADLINE_S * 1000).unref();

main().catch(async (err: unknown) => {
  const e = err as Error;
  if (err instanceof NoContainersError) console.error(`\ncompose: FAILED: ${e.message}\n(pnpm test:compose needs a Docker engine it can reach or install; it does not skip.)`);
  else console.error(`\ncompose: FAILED: ${err instanceof CommandError ? e.message : e.stack ?? e.message}`);
  await cleanUp().catch(() => undefined);
  process.exitCode = 1;
});
