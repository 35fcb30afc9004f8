/**
 * `pnpm start`: the whole system on one machine. Makes sure Redis answers (starting a local
 * redis-server when none does), starts the stub provider for every provider without a key,
 * starts each service as its own process with prefixed logs, and prints a dev API key with a
 * request to try. Ctrl-C stops everything.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiKeyStore, createRedis, describeProviders, hashTagged, loadConfig } from '../packages/shared/src';

const root = join(__dirname, '..');
const stateDir = join(root, '.tollgate');
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

function say(message: string): void {
  process.stdout.write(`${useColor ? '\x1b[1m' : ''}[tollgate]${useColor ? '\x1b[0m' : ''} ${message}\n`);
}

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
    if (stopping) return;
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs / 1000}s (see its log lines above)`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const httpOk = (url: string) => () => fetch(url).then((r) => r.ok);

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
  writeState('admin-token', adminToken);
  const config = loadConfig({ ...process.env, ADMIN_TOKEN: adminToken });

  if (!(await redisCheck.ping())) {
    if (!redisCheck.isLocal || !redisCheck.hasRedisServer()) throw new Error(redisCheck.unreachableMessage());
    say(`no Redis on ${redisCheck.host}:${redisCheck.port}; starting redis-server (no persistence)`);
    run('redis', 'redis-server', ['--port', String(redisCheck.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    await waitUntil('redis-server', () => redisCheck.ping());
  }
  say(`redis: ${config.redisUrl}`);

  // Every service (and the stub) runs as plain JavaScript on node: bundle the current sources first.
  await build();
  const env: NodeJS.ProcessEnv = { LOG_FORMAT: process.env.LOG_FORMAT ?? 'pretty', ADMIN_TOKEN: adminToken };
  if (Object.values(config.providers).some((p) => p.stub)) {
    run('stub-llm', process.execPath, ['packages/stub-llm/dist/index.js'], env);
    await waitUntil('the stub provider', httpOk(`http://${config.stubServer.host}:${config.stubServer.port}/healthz`));
  }
  say(describeProviders(config));

  const services = readdirSync(join(root, 'services')).filter((name) => existsSync(join(root, 'services', name, 'src', 'index.ts')));
  for (const name of services) run(name, process.execPath, [`services/${name}/dist/index.js`], env);

  const gateway = `http://${config.gateway.host}:${config.gateway.port}`;
  await waitUntil('the gateway', httpOk(`${gateway}/readyz`));

  // The dev key survives restarts in .tollgate/ (git-ignored) while Redis still knows it.
  const redis = createRedis(config.redisUrl, { name: 'tollgate-start' });
  const keys = new ApiKeyStore(redis, hashTagged(config.prefix));
  let devKey = readState('dev-key');
  if (!devKey || !(await keys.verify(devKey))) {
    devKey = (await keys.create({ name: 'dev', user_id: 'dev', project_id: 'dev', scopes: ['chat', 'vision', 'costs'] })).key;
    writeState('dev-key', devKey);
  }
  await redis.quit();

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
      `  metrics:      ${gateway}/metrics`,
      '',
      '  Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
}

main().catch(async (err: unknown) => {
  say(`start failed: ${err instanceof Error ? err.message : String(err)}`);
  await shutdown(1);
});
