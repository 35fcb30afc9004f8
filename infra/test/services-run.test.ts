/**
 * Each image's process, started the way infra/docker/Dockerfile starts it (its CMD: plain node on
 * the bundle `pnpm build` writes, dist/index.js, in the package folder) with the environment docker-compose.yml
 * gives it, on real Redis: it answers the image's HEALTHCHECK script, the readiness path the
 * Kubernetes probes use, and /metrics, then stops cleanly on SIGTERM. Only the loopback
 * addresses, free ports and a private key prefix differ from compose; there is no Docker here.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { randomUUID } from 'node:crypto';
import { createRedis, deleteByPrefix, hashTagged } from '../../packages/shared/src';
import { TEST_REDIS_URL } from '../../packages/shared/src/testing';
import { png1x1 } from '../../services/vision/test/images';
import { composeEnv, composeNameOf, DEPLOYABLES, dockerfile, dockerRuntimeEnv, packageDir, rootPath, STUB } from './infra-files';

jest.setTimeout(120_000);

const HEALTHCHECK = rootPath('infra/docker/healthcheck.js');
const runtime = dockerfile('infra/docker/Dockerfile').stages.at(-1)!;
const imageCmd = JSON.parse(runtime.instructions.filter((i) => i.op === 'CMD').at(-1)!.args) as string[];
/** The image's CMD: run in the package folder, where the build stage's `pnpm build` put dist/. */
const command = imageCmd;
const { build } = require(rootPath('scripts/build.js')) as { build(options?: { quiet?: boolean }): Promise<unknown> };

beforeAll(async () => {
  await build({ quiet: true });
});

const handedOut = new Set<number>();
/** A port free now and not given to another service of this test (a closed port can come back). */
async function freePort(): Promise<number> {
  for (;;) {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    await new Promise((resolve) => server.close(resolve));
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function runHealthcheck(env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [HEALTHCHECK], { env: { PATH: process.env.PATH, ...env }, timeout: 10_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr });
    });
  });
}

interface Running {
  name: string;
  proc: ChildProcess;
  env: NodeJS.ProcessEnv;
  port: number;
  output: () => string;
}

const prefix = `wiring-${randomUUID().slice(0, 8)}`;
const ADMIN_TOKEN = `admin-${randomUUID()}`;
const running: Running[] = [];

afterAll(async () => {
  for (const r of running) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL');
  const redis = createRedis(TEST_REDIS_URL, { name: 'wiring-cleanup' });
  await deleteByPrefix(redis, hashTagged(prefix));
  await redis.quit();
});

/**
 * The Redis scripts are .lua files the bundles inline (scripts/build.js): through the built
 * services, a budget write (write-budget-14), admissions (admit-1), a vision job's in-flight lock
 * (claim-lock-1, release-lock-1), ledger batches (append-entries-n, apply-totals-n) and a budget alert that fires and
 * resolves (observe-cost-n, apply-cost-window-9 and resolve-alert-7, which include notify.lua).
 */
async function bundlesRunTheirScripts(gatewayPort: number): Promise<void> {
  const base = `http://127.0.0.1:${gatewayPort}`;
  const headers = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined && { body: JSON.stringify(body) }) });
    return { status: res.status, json: (await res.json()) as Record<string, any> };
  };
  const budget = (limit: number) => call('PUT', '/v1/budgets/user/operator', { periods: [{ period: 'day', limit_micros: limit }] });
  expect((await budget(1)).status).toBe(201);
  const vision = await call('POST', '/v1/vision', { image_base64: png1x1().toString('base64'), prompt: 'What is this?' });
  expect([vision.status, vision.json.cost?.micros]).toEqual([200, 30_000]);
  const chat = await call('POST', '/v1/chat', { message: 'Hello from the bundles' });
  expect(chat.status).toBe(200);
  const alertsIn = async (state: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { json } = await call('GET', `/v1/alerts?scope=user&state=${state}`);
      const mine = (json.alerts as Array<{ scope_id: string; threshold_pct?: number }>).filter((a) => a.scope_id === 'operator');
      if (mine.length > 0 || Date.now() > deadline) return mine;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  // 100% of a 1-micro budget: the higher threshold fired, the lower ones inhibited.
  expect((await alertsIn('firing')).map((a) => a.threshold_pct)).toEqual([100]);
  expect((await budget(1_000_000_000)).status).toBe(200);
  expect((await alertsIn('resolved')).map((a) => a.threshold_pct)).toEqual([100]);
}

describe('the images\' processes, as compose runs them', () => {
  it('the health check script fails without a port to check, or with nothing listening', async () => {
    const missing = await runHealthcheck({ TOLLGATE_SERVICE: 'vision' });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('HEALTH_PORT');
    const closed = await runHealthcheck({ TOLLGATE_SERVICE: 'gateway', GATEWAY_PORT: String(await freePort()) });
    expect(closed.code).toBe(1);
  });

  it('every service starts from its image command, passes the health check and the probes, and stops on SIGTERM', async () => {
    const stubPort = await freePort();
    for (const name of DEPLOYABLES) {
      const port = name === STUB ? stubPort : await freePort();
      const env: NodeJS.ProcessEnv = {
        PATH: process.env.PATH,
        ...dockerRuntimeEnv(),
        TOLLGATE_SERVICE: name,
        ...composeEnv(composeNameOf(name)),
        // What differs from compose: one machine instead of a network of containers.
        REDIS_URL: TEST_REDIS_URL,
        TOLLGATE_PREFIX: prefix,
        GATEWAY_HOST: '127.0.0.1',
        HEALTH_HOST: '127.0.0.1',
        STUB_HOST: '127.0.0.1',
        STUB_PORT: String(stubPort),
        ...(name === 'gateway' ? { GATEWAY_PORT: String(port), ADMIN_TOKEN } : name === STUB ? {} : { HEALTH_PORT: String(port) }),
      };
      const proc = spawn(command[0]!, command.slice(1), { cwd: packageDir(name), env, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      running.push({ name, proc, env, port, output: () => output });
    }

    // Up: /healthz answers (polled in-process).
    await Promise.all(
      running.map(async (r) => {
        const deadline = Date.now() + 90_000;
        for (;;) {
          if (r.proc.exitCode !== null) throw new Error(`${r.name} exited with ${r.proc.exitCode}:\n${r.output()}`);
          const ok = await fetch(`http://127.0.0.1:${r.port}/healthz`).then((res) => res.ok, () => false);
          if (ok) break;
          if (Date.now() > deadline) throw new Error(`${r.name} never answered /healthz:\n${r.output()}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }),
    );
    // Healthy as Docker judges it: the HEALTHCHECK script, with the container's environment, exits 0.
    for (const r of running) expect([r.name, (await runHealthcheck(r.env)).code]).toEqual([r.name, 0]);

    for (const r of running) {
      const base = `http://127.0.0.1:${r.port}`;
      const ready = await fetch(`${base}${r.name === STUB ? '/healthz' : '/readyz'}`);
      expect([r.name, ready.status]).toEqual([r.name, 200]);
      if (r.name === STUB) continue;
      const metrics = await (await fetch(`${base}/metrics`)).text();
      if (r.name === 'gateway') {
        for (const m of ['tollgate_http_requests_total', 'tollgate_http_request_duration_seconds', 'tollgate_queue_jobs', 'tollgate_circuit_state', 'tollgate_errors_in_window', 'tollgate_error_ratio']) {
          expect([r.name, metrics.includes(`# TYPE ${m} `)]).toEqual([r.name, true]);
        }
      } else {
        expect([r.name, metrics]).toEqual([r.name, expect.stringContaining(`tollgate_worker_process_resident_memory_bytes{service="${r.name}"}`)]);
      }
    }

    await bundlesRunTheirScripts(running.find((r) => r.name === 'gateway')!.port);

    // node is PID 1 in the image: SIGTERM must reach the service's own shutdown and end in exit 0.
    await Promise.all(
      running.map(async (r) => {
        const exited = once(r.proc, 'exit');
        r.proc.kill('SIGTERM');
        const [code, signal] = (await exited) as [number | null, string | null];
        expect([r.name, code, signal]).toEqual([r.name, 0, null]);
        expect((await runHealthcheck(r.env)).code).toBe(1);
      }),
    );
  });
});
