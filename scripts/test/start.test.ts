/**
 * `pnpm start` as a user runs it (tsx scripts/start.ts), each run in a process group of its own so
 * the test can tell whether anything it started is left behind. Its own key prefix, state dir and
 * ports; nothing of a developer's .tollgate/ is touched.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRedis, deleteByPrefix, hashTagged } from '../../packages/shared/src';
import { TEST_REDIS_URL } from '../../packages/shared/src/testing';
import { freePort, portFree } from '../port-check';

jest.setTimeout(180_000);

const ROOT = join(__dirname, '..', '..');
const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');
const prefix = `test-start-${randomUUID().slice(0, 8)}`;
const stateDir = mkdtempSync(join(tmpdir(), 'tollgate-start-'));
const runs: Run[] = [];

afterAll(async () => {
  for (const r of runs) if (r.alive()) process.kill(-r.proc.pid!, 'SIGKILL');
  rmSync(stateDir, { recursive: true, force: true });
  const redis = createRedis(TEST_REDIS_URL, { name: 'test-start-cleanup' });
  await deleteByPrefix(redis, hashTagged(prefix));
  await redis.quit();
});

interface Run {
  proc: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
  /** Whether any process of the run's group is still there. */
  alive: () => boolean;
}

function start(env: NodeJS.ProcessEnv): Run {
  const base = { ...process.env };
  for (const k of ['OPENAI_API_KEY', 'GEMINI_API_KEY', 'DEEPSEEK_API_KEY', 'HEALTH_PORT', 'HEALTH_HOST', 'ADMIN_TOKEN', 'FORCE_COLOR']) delete base[k];
  const proc = spawn(TSX, ['scripts/start.ts'], {
    cwd: ROOT,
    detached: true,
    env: { ...base, REDIS_URL: TEST_REDIS_URL, TOLLGATE_PREFIX: prefix, TOLLGATE_STATE_DIR: stateDir, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  const alive = () => {
    try {
      process.kill(-proc.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  const run = { proc, out: () => out, exited, alive };
  runs.push(run);
  return run;
}

async function until(run: Run, pattern: RegExp, timeoutMs = 150_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(run.out())) {
    if (Date.now() > deadline || run.proc.exitCode !== null) throw new Error(`no ${pattern} in the output of pnpm start:\n${run.out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether nothing of the group is left once its leader is gone (orphans are reparented, not killed). */
async function goneSoon(run: Run): Promise<boolean> {
  for (let i = 0; i < 50 && run.alive(); i++) await new Promise((r) => setTimeout(r, 100));
  return !run.alive();
}

test('with its gateway port held by a plain TCP listener it starts nothing, names the port and its holder, prints no key and exits 1', async () => {
  const sockets: Socket[] = [];
  const listener = createServer((s) => sockets.push(s));
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const gatewayPort = (listener.address() as { port: number }).port;
  const stubPort = await freePort('127.0.0.1');
  try {
    const run = start({ GATEWAY_PORT: String(gatewayPort), STUB_PORT: String(stubPort) });
    expect(await run.exited).toBe(1);
    const out = run.out();
    expect(out).toContain(`port ${gatewayPort} (the gateway, GATEWAY_PORT) is taken by pid ${process.pid} (`);
    expect(out).toContain('nothing was started.');
    expect(out).not.toMatch(/tg_|dev API key|admin token|ready/);
    // No build, no stub, no service: nothing bound the stub's port, nothing of the group is left, no state written.
    expect(out).not.toContain('build:');
    expect(await portFree('127.0.0.1', stubPort)).toBe(true);
    expect(await goneSoon(run)).toBe(true);
    expect(readdirSync(stateDir)).toEqual([]);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => listener.close(r));
  }
});

test('a second start while the first runs names the earlier Tollgate and its pnpm start, and leaves the first serving; Ctrl-C stops everything', async () => {
  const env = { GATEWAY_PORT: String(await freePort('127.0.0.1')), STUB_PORT: String(await freePort('127.0.0.1')) };
  const first = start(env);
  await until(first, /Ctrl-C stops everything\./);
  const key = /dev API key:\s+(tg_\S+)/.exec(first.out())?.[1];
  expect(key).toBeDefined();
  expect(readFileSync(join(stateDir, 'dev-key'), 'utf8').trim()).toBe(key);
  // Every worker was found ready on its own health port before the key was printed.
  expect(first.out()).toMatch(/workers' \/readyz and \/metrics on alerting :\d+, analytics :\d+, chat-workflow :\d+, cost-ledger :\d+, journeys :\d+, vision :\d+/);

  const second = start(env);
  expect(await second.exited).toBe(1);
  const out = second.out();
  const gateway = new RegExp(`port ${env.GATEWAY_PORT} \\(the gateway, GATEWAY_PORT\\) is taken by an earlier Tollgate gateway \\(pid \\d+\\), run by \`pnpm start\` \\(pid (\\d+) in ${ROOT.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\): stop that with Ctrl-C in its terminal or \`kill \\d+\``);
  expect(out).toMatch(gateway);
  expect(out).toMatch(new RegExp(`port ${env.STUB_PORT} \\(the stub provider, STUB_PORT\\) is taken by an earlier Tollgate stub-llm`));
  expect(out).not.toMatch(/tg_|dev API key/);
  // The pnpm start it names is the first run's (in its process group).
  const startPid = Number(gateway.exec(out)![1]);
  const stat = readFileSync(`/proc/${startPid}/stat`, 'utf8');
  expect(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2])).toBe(first.proc.pid);
  expect(await goneSoon(second)).toBe(true);

  // The first is untouched: a chat request with its key is answered.
  const res = await fetch(`http://127.0.0.1:${env.GATEWAY_PORT}/v1/chat`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ message: 'Still there?' }),
  });
  expect(res.status).toBe(200);

  // Ctrl-C in a terminal signals the whole foreground group.
  process.kill(-first.proc.pid!, 'SIGINT');
  expect(await first.exited).toBe(0);
  expect(await goneSoon(first)).toBe(true);
  expect(await portFree('127.0.0.1', Number(env.GATEWAY_PORT))).toBe(true);
});
