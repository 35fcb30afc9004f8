/**
 * `pnpm start`: the whole system on one machine. First checks that every port it will use is
 * free (gateway, stub, the workers' health ports, Redis when it must start one) and stops, naming
 * the holder, when one is not: nothing is started then. Then makes sure Redis answers (starting a
 * local redis-server when none does), starts the stub provider for every provider without a key,
 * starts each service as its own process with prefixed logs, waits until each of the processes it
 * started (by pid, not whatever answers on the port) is ready, and prints a dev API key with a
 * request to try. Ctrl-C stops everything.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiKeyStore, createRedis, describeProviders, hashTagged, loadConfig } from '../packages/shared/src';
import { checkPorts, freePort, healthzAt, type PortUse } from './port-check';

const root = join(__dirname, '..');
// TOLLGATE_STATE_DIR: for tests, which must not replace a developer's dev key.
const stateDir = process.env.TOLLGATE_STATE_DIR || join(root, '.tollgate');
const { build } = require('./build.js') as { build(options?: { only?: string[] }): Promise<unknown> };
const redisCheck = require('./ensure-redis.js') as {
  ping(timeoutMs?: number): Promise<boolean>;
  host: string;
  port: number;
  isLocal: boolean;
  hasRedisServer(): boolean;
  unreachableMessage(): string;
};

const COLORS = [36, 35, 33, 32, 34, 91, 96, 95];
const useColor = process.stdout.isTTY;
const children: Array<{ name: string; proc: ChildProcess }> = [];
let stopping = false;

function say(message: string, stream: NodeJS.WriteStream = process.stdout): void {
  stream.write(`${useColor ? '\x1b[1m' : ''}[tollgate]${useColor ? '\x1b[0m' : ''} ${message}\n`);
}

/** Thrown by a wait that ends because everything is stopping (a process exited, Ctrl-C). */
class Stopping extends Error {}

/** Runs a process whose every output line is prefixed with its name. */
function run(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const color = COLORS[children.length % COLORS.length];
  const tag = useColor ? `\x1b[${color}m[${name}]\x1b[0m` : `[${name}]`;
  const proc = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [proc.stdout, proc.stderr]) {
    let rest = '';
    stream?.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) process.stdout.write(`${tag} ${line}\n`);
    });
  }
  proc.on('exit', (code, signal) => {
    if (stopping) return;
    say(`${name} exited (${signal ?? `code ${code}`}); stopping everything`);
    void shutdown(1);
  });
  children.push({ name, proc });
  return proc;
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (stopping) throw new Stopping();
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs / 1000}s (see its log lines above)`);
    await new Promise((r) => setTimeout(r, 200));
  }
  if (stopping) throw new Stopping();
}

/** Ready means this very process answers: its /healthz names its pid, and its ready path says 200. */
function ownReady(proc: ChildProcess, host: string, port: number, readyPath: string) {
  return async () => (await healthzAt(host, port))?.pid === proc.pid && (await fetch(`http://${host}:${port}${readyPath}`)).ok;
}

async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  say('stopping...');
  const exits = children.reverse().map(({ proc }) =>
    proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
          proc.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          proc.kill('SIGTERM');
        }),
  );
  await Promise.all(exits);
  say('stopped');
  process.exit(code);
}

function readState(name: string): string | undefined {
  const file = join(stateDir, name);
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

function writeState(name: string, value: string): void {
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(join(stateDir, name), `${value}\n`, { mode: 0o600 });
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  const adminToken = process.env.ADMIN_TOKEN ?? readState('admin-token') ?? randomBytes(24).toString('base64url');
  const config = loadConfig({ ...process.env, ADMIN_TOKEN: adminToken });
  const services = readdirSync(join(root, 'services')).filter((name) => existsSync(join(root, 'services', name, 'src', 'index.ts')));
  const workers = services.filter((name) => name !== 'gateway');
  const stubbed = Object.values(config.providers).some((p) => p.stub);
  const redisUp = await redisCheck.ping();

  // Each worker serves /healthz and /readyz on a port of its own: from HEALTH_PORT up when it is
  // set, otherwise free ones picked now.
  const healthHost = config.health?.host ?? '127.0.0.1';
  const healthPorts = new Map<string, number>();
  for (const [i, name] of workers.entries()) healthPorts.set(name, config.health ? config.health.port + i : await freePort(healthHost));

  // Nothing starts until every port is known to be free.
  const uses: PortUse[] = [
    { ...config.gateway, what: 'the gateway', variable: 'GATEWAY_PORT' },
    ...(stubbed ? [{ ...config.stubServer, what: 'the stub provider', variable: 'STUB_PORT' }] : []),
    ...workers.map((name) => ({ host: healthHost, port: healthPorts.get(name)!, what: `the ${name} health server`, variable: 'HEALTH_PORT' })),
    ...(!redisUp && redisCheck.isLocal ? [{ host: '127.0.0.1', port: redisCheck.port, what: 'the redis-server it would start', variable: 'REDIS_URL' }] : []),
  ];
  const problems = await checkPorts(uses);
  if (problems.length > 0) {
    for (const p of problems) say(p, process.stderr);
    say('nothing was started.', process.stderr);
    process.exit(1);
  }
  writeState('admin-token', adminToken);

  if (!redisUp) {
    if (!redisCheck.isLocal || !redisCheck.hasRedisServer()) throw new Error(redisCheck.unreachableMessage());
    say(`no Redis on ${redisCheck.host}:${redisCheck.port}; starting redis-server (no persistence)`);
    run('redis', 'redis-server', ['--port', String(redisCheck.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    await waitUntil('redis-server', () => redisCheck.ping());
  }
  say(`redis: ${config.redisUrl}`);

  // Every service (and the stub) runs as plain JavaScript on node: bundle the current sources first.
  await build();
  if (stopping) throw new Stopping();
  const env: NodeJS.ProcessEnv = { LOG_FORMAT: process.env.LOG_FORMAT ?? 'pretty', ADMIN_TOKEN: adminToken };
  if (stubbed) {
    const stub = run('stub-llm', process.execPath, ['packages/stub-llm/dist/index.js'], env);
    await waitUntil('the stub provider', ownReady(stub, config.stubServer.host, config.stubServer.port, '/healthz'));
  }
  say(describeProviders(config));

  const started = services.map((name) => {
    const port = healthPorts.get(name);
    const proc = run(name, process.execPath, [`services/${name}/dist/index.js`], port === undefined ? env : { ...env, HEALTH_HOST: healthHost, HEALTH_PORT: String(port) });
    return { name, proc, host: port === undefined ? config.gateway.host : healthHost, port: port ?? config.gateway.port };
  });
  await Promise.all(started.map((s) => waitUntil(s.name, ownReady(s.proc, s.host, s.port, '/readyz'))));
  const gateway = `http://${config.gateway.host}:${config.gateway.port}`;

  // The dev key survives restarts in .tollgate/ (git-ignored) while Redis still knows it.
  const redis = createRedis(config.redisUrl, { name: 'tollgate-start' });
  const keys = new ApiKeyStore(redis, hashTagged(config.prefix));
  let devKey = readState('dev-key');
  if (!devKey || !(await keys.verify(devKey))) {
    devKey = (await keys.create({ name: 'dev', user_id: 'dev', project_id: 'dev', scopes: ['chat', 'vision', 'costs', 'usage'] })).key;
    writeState('dev-key', devKey);
  }
  await redis.quit();
  if (stopping) throw new Stopping();

  say(`ready: ${services.join(', ')}${config.stubMode ? ' (every provider on the local stub, no keys needed)' : ''}`);
  process.stdout.write(
    [
      '',
      `  dev API key:  ${devKey}`,
      `  admin token:  ${adminToken}   (also in .tollgate/admin-token)`,
      '',
      '  try it:',
      `    curl -s ${gateway}/v1/chat -H "authorization: Bearer ${devKey}" -H 'content-type: application/json' \\`,
      `      -d '{"message":"What does Tollgate do?"}'`,
      '',
      `  OpenAI SDK:   new OpenAI({ baseURL: '${gateway}/v1', apiKey: '<dev API key>' })`,
      `  metrics:      ${gateway}/metrics; workers' /readyz and /metrics on ${started.filter((x) => x.name !== 'gateway').map((x) => `${x.name} :${x.port}`).join(', ')}`,
      '',
      '  Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
}

main().catch(async (err: unknown) => {
  // A process that exited has already said so and started the shutdown.
  if (err instanceof Stopping) return;
  say(`start failed: ${err instanceof Error ? err.message : String(err)}`, process.stderr);
  await shutdown(1);
});
