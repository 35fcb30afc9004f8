import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Redis from 'ioredis';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Logger } from 'winston';

/** Prefix of the process metrics a worker's health server exposes; each series carries `service`. */
export const WORKER_METRICS_PREFIX = 'tollgate_worker_';

/** The registry a worker's /metrics serves: Node process metrics under WORKER_METRICS_PREFIX, labelled with the service. */
export function createWorkerRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry, prefix: WORKER_METRICS_PREFIX });
  return registry;
}

export interface HealthServerOptions {
  /** Service name: the `service` label of every metric. */
  service: string;
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Pinged by /readyz. */
  redis: Redis;
  logger?: Logger;
  /** How long /readyz waits for PONG. Default 1000 ms. */
  pingTimeoutMs?: number;
}

export interface HealthServer {
  /** The port actually bound. */
  port: number;
  close(): Promise<void>;
}

/**
 * The workers' HTTP surface for container probes (they have no API of their own):
 * `GET /healthz` 200 while the process runs, `GET /readyz` 200 when Redis answers (503 otherwise),
 * `GET /metrics` Prometheus process metrics. Same paths and bodies as the gateway's.
 */
export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const registry = createWorkerRegistry(opts.service);
  const pingTimeoutMs = opts.pingTimeoutMs ?? 1_000;

  const redisAnswers = (): Promise<boolean> =>
    Promise.race([
      opts.redis.ping().then(() => true, () => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), pingTimeoutMs).unref()),
    ]);

  const send = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method not allowed' });
    // Who answers, so a starter can tell its own process from an earlier one on the same port.
    if (path === '/healthz') return send(res, 200, { status: 'ok', service: opts.service, pid: process.pid });
    if (path === '/readyz') {
      void redisAnswers().then((ok) =>
        send(res, ok ? 200 : 503, { status: ok ? 'ready' : 'unavailable', redis: ok ? 'ok' : 'unreachable' }),
      );
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (err: Error) => send(res, 500, { error: err.message }),
      );
      return;
    }
    send(res, 404, { error: 'not found' });
  });
  // Probes must not keep a stopping process alive.
  server.keepAliveTimeout = 1_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  opts.logger?.info(`health server on http://${opts.host}:${port} (/healthz, /readyz, /metrics)`);

  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
