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

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
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
const running: Running[] = [];

afterAll(async () => {
  for (const r of running) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL');
  const redis = createRedis(TEST_REDIS_URL, { name: 'wiring-cleanup' });
  await deleteByPrefix(redis, hashTagged(prefix));
  await redis.quit();
});

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
        ...(name === 'gateway' ? { GATEWAY_PORT: String(port) } : name === STUB ? {} : { HEALTH_PORT: String(port) }),
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
