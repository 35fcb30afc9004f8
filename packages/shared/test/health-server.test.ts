import { ConfigError, loadConfig } from '../src/config';
import { startHealthServer } from '../src/health-server';
import { createRedis } from '../src/redis';
import { testRedis } from '../src/testing';

describe('HEALTH_HOST / HEALTH_PORT', () => {
  it('leaves the health server off unless HEALTH_PORT is set', () => {
    expect(loadConfig({}).health).toBeUndefined();
    expect(loadConfig({ HEALTH_PORT: '' }).health).toBeUndefined();
    expect(loadConfig({ HEALTH_HOST: '0.0.0.0' }).health).toBeUndefined();
    expect(loadConfig({ HEALTH_PORT: '9100' }).health).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(loadConfig({ HEALTH_PORT: '9100', HEALTH_HOST: '0.0.0.0' }).health).toEqual({ host: '0.0.0.0', port: 9100 });
  });

  it.each(['0', '65536', 'abc', '-1'])('rejects HEALTH_PORT=%s', (value) => {
    try {
      loadConfig({ HEALTH_PORT: value });
      throw new Error('expected a ConfigError');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems).toEqual([{ variable: 'HEALTH_PORT', message: expect.stringContaining('port number') }]);
    }
  });
});

describe('startHealthServer', () => {
  const { redis, cleanup } = testRedis('health-server');
  afterAll(cleanup);

  it('serves /healthz, /readyz (Redis answers) and the process metrics labelled with the service', async () => {
    const server = await startHealthServer({ service: 'test-svc', host: '127.0.0.1', port: 0, redis });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      const health = await fetch(`${base}/healthz`);
      expect([health.status, await health.json()]).toEqual([200, { status: 'ok', service: 'test-svc', pid: process.pid }]);
      const ready = await fetch(`${base}/readyz`);
      expect([ready.status, await ready.json()]).toEqual([200, { status: 'ready', redis: 'ok' }]);
      const metrics = await fetch(`${base}/metrics`);
      expect(metrics.headers.get('content-type')).toContain('text/plain');
      expect(await metrics.text()).toMatch(/^tollgate_worker_process_resident_memory_bytes\{service="test-svc"\} \d+/m);
      expect((await fetch(`${base}/nope`)).status).toBe(404);
      expect((await fetch(`${base}/healthz`, { method: 'POST' })).status).toBe(405);
    } finally {
      await server.close();
    }
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });

  it('answers /readyz 503 when Redis does not, within the ping timeout', async () => {
    const dead = createRedis('redis://127.0.0.1:1', { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, nodes: null });
    dead.on('error', () => undefined);
    const server = await startHealthServer({ service: 'test-svc', host: '127.0.0.1', port: 0, redis: dead, pingTimeoutMs: 500 });
    try {
      const started = Date.now();
      const ready = await fetch(`http://127.0.0.1:${server.port}/readyz`);
      expect([ready.status, await ready.json()]).toEqual([503, { status: 'unavailable', redis: 'unreachable' }]);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200); // alive, just not ready
    } finally {
      await server.close();
      dead.disconnect();
    }
  });

  it('reports a port already taken instead of hanging', async () => {
    const first = await startHealthServer({ service: 'a', host: '127.0.0.1', port: 0, redis });
    try {
      await expect(startHealthServer({ service: 'b', host: '127.0.0.1', port: first.port, redis })).rejects.toThrow(/EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});
