import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createRedis, deleteByPrefix, EventBus } from '@tollgate/shared';
import { TEST_REDIS_URL, waitFor } from '@tollgate/shared/src/testing';
import { startStub } from '@tollgate/stub-llm';
import { png1x1 } from '@tollgate/vision/test/images';

/**
 * No secret in any log line. The five services run as the real processes (`src/index.ts`, as
 * `pnpm start` runs them) with LOG_LEVEL=debug and every secret a deployment has: provider API
 * keys (shaped like real ones), the ADMIN_TOKEN, a Redis password in REDIS_URL, a webhook URL
 * whose path is its credential and a webhook signing secret. The test then uses real API keys,
 * bad keys, a revoked key and a wrong admin token; has an upstream echo the provider key back in
 * its 401; makes the ledger and the webhook worker log their failures (one with a key inside the
 * error text); starts one gateway with a broken configuration; stops everything; and scans every
 * line the processes wrote, stdout and stderr, for every secret it used.
 */

const root = path.resolve(__dirname, '../../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');
const SERVICES = ['gateway', 'chat-workflow', 'vision', 'cost-ledger', 'alerting'] as const;
const rnd = (n: number) => randomBytes(n).toString('hex');

const SECRET = {
  adminToken: `log-admin-${rnd(16)}`,
  openai: `sk-proj-${rnd(20)}`,
  deepseek: `sk-${rnd(20)}`,
  gemini: `AIzaSy${rnd(16)}`,
  redisPassword: `redispw${rnd(10)}`,
  webhookSecret: `whsec-log-${rnd(12)}`,
  webhookPath: `XOXB${rnd(12)}`,
};
/** API keys and tokens the test sends or is given; all are scanned for too. */
const used: string[] = [];

const prefix = `logtest-${rnd(4)}`;
const namespace = `{${prefix}}`;
const redis = createRedis(TEST_REDIS_URL, { name: 'test-log-secrets' });
const procs = new Map<string, ChildProcessWithoutNullStreams>();
const output = new Map<string, string>();
const servers: Server[] = [];
let stub: Awaited<ReturnType<typeof startStub>>;
let gatewayUrl = '';
let webhookUrl = '';

function redisUrlWithPassword(): string {
  const u = new URL(TEST_REDIS_URL);
  // A Redis without a password accepts a supplied one (ioredis only warns); one with a password keeps its own.
  if (!u.password) u.password = SECRET.redisPassword;
  return u.toString();
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

function listen(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));
}

function run(name: string, service: string, env: Record<string, string>): ChildProcessWithoutNullStreams {
  const child = spawn(tsx, [path.join(root, 'services', service, 'src', 'index.ts')], {
    cwd: root,
    env: { ...process.env, ...env },
  });
  output.set(name, '');
  const append = (chunk: Buffer) => output.set(name, output.get(name)! + chunk.toString());
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  procs.set(name, child);
  return child;
}

const exited = (child: ChildProcessWithoutNullStreams) =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r()));

async function stopAll(): Promise<void> {
  await Promise.all(
    [...procs.values()].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.kill('SIGTERM');
      await exited(child);
      clearTimeout(kill);
    }),
  );
}

async function api(method: string, p: string, auth: Record<string, string>, body?: unknown) {
  const res = await fetch(`${gatewayUrl}${p}`, {
    method,
    headers: { ...auth, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}
const bearer = (k: string) => ({ authorization: `Bearer ${k}` });
const allOutput = () => [...output.values()].join('\n');

let env: Record<string, string>;

beforeAll(async () => {
  stub = await startStub({ port: 0, quiet: true });
  // An upstream that answers 401 and echoes the key it was sent, as some providers' errors do.
  const hostile = await listen((req, res) => {
    req.resume();
    const key = String(req.headers['x-goog-api-key'] ?? req.headers.authorization ?? '');
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 401, message: `API key not valid: ${key}. Please pass a valid API key.`, status: 'UNAUTHENTICATED' } }));
  });
  // A webhook target that refuses every delivery: the alerting service logs the dead letter.
  const hook = await listen((req, res) => {
    req.resume();
    res.writeHead(400).end('no');
  });
  const port = await freePort();
  gatewayUrl = `http://127.0.0.1:${port}`;
  env = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'debug',
    LOG_FORMAT: 'json',
    REDIS_URL: redisUrlWithPassword(),
    TOLLGATE_PREFIX: prefix,
    GATEWAY_HOST: '127.0.0.1',
    GATEWAY_PORT: String(port),
    ADMIN_TOKEN: SECRET.adminToken,
    OPENAI_API_KEY: SECRET.openai,
    OPENAI_BASE_URL: `${stub.url}/openai/v1`,
    DEEPSEEK_API_KEY: SECRET.deepseek,
    DEEPSEEK_BASE_URL: `${stub.url}/deepseek/v1`,
    GEMINI_API_KEY: SECRET.gemini,
    GEMINI_BASE_URL: hostile,
    CHAT_FALLBACK_CHAIN: 'deepseek:deepseek-chat,openai:gpt-4o-mini,gemini:gemini-2.0-flash',
    PROVIDER_TIMEOUT_MS: '3000',
    REQUEST_DEADLINE_MS: '10000',
    MAX_PROVIDER_ATTEMPTS: '1',
    BUS_CLAIM_IDLE_MS: '2000',
    BUDGET_DAILY_MICROS: '0',
    BUDGET_WEEKLY_MICROS: '0',
    BUDGET_MONTHLY_MICROS: '0',
    ALERT_SWEEP_INTERVAL_MS: '200',
    ALERT_WEBHOOK_ATTEMPTS: '1',
    ALERT_WEBHOOK_TIMEOUT_MS: '1000',
  };
  for (const s of SERVICES) run(s, s, env);
  const ready = await waitFor(async () => {
    for (const [name, child] of procs) if (child.exitCode !== null) throw new Error(`${name} exited early:\n${output.get(name)}`);
    const up = await fetch(`${gatewayUrl}/readyz`).then((r) => r.ok, () => false);
    return up && ['chat-workflow', 'vision', 'cost-ledger', 'alerting'].every((s) => output.get(s)!.includes(`${s} ready`));
  }, 75_000, 200);
  if (!ready) throw new Error(`services did not start:\n${allOutput()}`);
  webhookUrl = `${hook}/services/${SECRET.webhookPath}`;
}, 90_000);

afterAll(async () => {
  await stopAll();
  for (const s of servers) await new Promise((r) => s.close(r));
  await stub?.close();
  await deleteByPrefix(redis, namespace);
  await redis.quit();
});

test('every secret the system holds or is sent stays out of every log line of every service', async () => {
  const admin = bearer(SECRET.adminToken);
  // Keys: a tenant's, an admin key, and one revoked at once.
  const alice = await api('POST', '/v1/admin/keys', admin, { name: 'alice', user_id: 'alice', project_id: 'web', scopes: ['chat', 'vision', 'costs'] });
  expect(alice.status).toBe(201);
  const ops = await api('POST', '/v1/admin/keys', admin, { name: 'ops', user_id: 'ops', project_id: 'ops', scopes: ['admin'] });
  const revoked = await api('POST', '/v1/admin/keys', admin, { name: 'gone', user_id: 'gone', project_id: 'web' });
  used.push(alice.json.key, ops.json.key, revoked.json.key);
  expect((await api('DELETE', `/v1/admin/keys/${revoked.json.key_id}`, bearer(ops.json.key))).status).toBe(204);

  // A webhook whose URL path is a credential, with a signing secret, and a budget that fires at once.
  expect((await api('PUT', '/v1/alerts/webhooks/leaky', bearer(ops.json.key), { url: webhookUrl, secret: SECRET.webhookSecret })).status).toBe(201);
  expect((await api('PUT', '/v1/budgets/user/alice', admin, { periods: [{ period: 'day', limit_micros: 1 }] })).status).toBe(201);

  // Real work, with the key in both header forms.
  const key = alice.json.key as string;
  expect((await api('POST', '/v1/chat', bearer(key), { message: `my key is ${key}, keep it safe` })).status).toBe(200);
  expect((await api('POST', '/v1/chat/completions', { 'x-api-key': key }, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } })).status).toBe(200);
  expect((await api('POST', '/v1/vision', bearer(key), { image_base64: png1x1().toString('base64'), prompt: 'What?' })).status).toBe(200);
  // The upstream that echoes its key: gemini first for this chat, and for high-quality vision.
  const echoed = await api('POST', '/v1/chat', bearer(key), { message: 'gemini please', model: 'gemini-2.0-flash' });
  expect(echoed.text).not.toContain(SECRET.gemini);
  const visionHigh = await api('POST', '/v1/vision', bearer(key), { image_base64: png1x1([9, 9, 9]).toString('base64'), prompt: 'Detail?', quality: 'high' });
  expect(visionHigh.text).not.toContain(SECRET.gemini);
  expect((await api('GET', '/v1/costs/summary', bearer(key))).status).toBe(200);

  // Bad credentials of every kind.
  const fakes = [`tg_${randomBytes(32).toString('base64url')}`, `tg_${randomBytes(32).toString('base64url')}`, `${SECRET.adminToken}x`, `sk-proj-${rnd(20)}`];
  used.push(...fakes);
  expect((await api('POST', '/v1/chat', bearer(fakes[0]!), { message: 'hi' })).status).toBe(401);
  expect((await api('GET', '/v1/costs/summary', { 'x-api-key': fakes[1]! })).status).toBe(401);
  expect((await api('GET', '/v1/admin/keys', bearer(fakes[2]!))).status).toBe(401);
  expect((await api('GET', '/v1/costs/summary', bearer(fakes[3]!))).status).toBe(401);
  expect((await api('POST', '/v1/chat', bearer(revoked.json.key), { message: 'hi' })).status).toBe(401);
  expect((await api('POST', '/v1/chat', { authorization: `Basic ${Buffer.from(`alice:${key}`).toString('base64')}` }, { message: 'hi' })).status).toBe(401);

  // A producer bug that puts a key where a model name goes: the ledger refuses it and logs why.
  const bus = new EventBus({ redis, prefix: namespace, service: 'log-test' });
  await bus.publish(
    'usage.recorded',
    { provider: 'openai', model: SECRET.openai, service: 'chat-workflow', operation: 'chat', units: { input_tokens: 1 }, usage_source: 'provider', request_id: 'leak-test', cached: false },
    { correlation_id: 'leak-test', user_id: 'alice', project_id: 'web' },
  );

  // The failures that services do log: the ledger's dead letter and the refused webhook delivery.
  const logged = await waitFor(
    () => output.get('cost-ledger')!.includes('dead-letter') && output.get('alerting')!.includes('webhook delivery dead-lettered'),
    20_000,
    100,
  );
  if (!logged) throw new Error(`expected failure log lines did not appear:\n${allOutput()}`);

  // A gateway that cannot start: its configuration errors, printed before any logger exists.
  const broken = run('gateway (bad config)', 'gateway', { ...env, ADMIN_TOKEN: 'short-secret', GATEWAY_PORT: 'not-a-port' });
  used.push('short-secret');
  await exited(broken);
  expect(broken.exitCode).toBe(1);
  expect(output.get('gateway (bad config)')).toMatch(/ADMIN_TOKEN.*at least 16/);

  await stopAll();

  // What the services said: enough to make the scan mean something.
  const text = allOutput();
  if (process.env.LOG_DUMP) console.log(text);
  for (const s of SERVICES) {
    expect({ service: s, lines: output.get(s)!.split('\n').filter(Boolean).length }).toEqual({ service: s, lines: expect.any(Number) });
    expect(output.get(s)).toMatch(/shutting down|stopped/);
  }
  for (const s of ['gateway', 'chat-workflow', 'vision']) expect(output.get(s)).toMatch(/providers: openai -> /);
  expect(text).toContain('[REDACTED]'); // the ledger's error named the "model": the redactor caught it

  const secrets: Array<[string, string]> = [
    ...Object.entries(SECRET),
    ...used.map((k, i): [string, string] => [`sent or issued #${i}`, k]),
    // The random part of each Tollgate key alone, too.
    ...used.filter((k) => k.startsWith('tg_')).map((k, i): [string, string] => [`key body #${i}`, k.slice(3, 27)]),
  ];
  const leaks = secrets.filter(([, value]) => text.includes(value)).map(([name]) => name);
  if (leaks.length) {
    const lines = text.split('\n').filter((l) => secrets.some(([, v]) => l.includes(v)));
    throw new Error(`secrets in the logs: ${leaks.join(', ')}\n${lines.slice(0, 10).join('\n')}`);
  }
  expect(leaks).toEqual([]);
}, 90_000);
