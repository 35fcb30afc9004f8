import { Router } from 'express';
import type Redis from 'ioredis';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { route } from '../openapi/registry';

const readyReply = z.object({ status: z.enum(['ready', 'unavailable']), redis: z.enum(['ok', 'unreachable']) });
export const openapi = [
  route({
    method: 'get', path: '/healthz', tag: 'Operations', guard: 'none', summary: 'Liveness, and which process answers',
    responses: { 200: { description: 'Alive.', content: { 'application/json': z.object({ status: z.literal('ok'), service: z.literal('gateway'), pid: z.number().int() }) } } },
  }),
  route({
    method: 'get', path: '/readyz', tag: 'Operations', guard: 'none', summary: 'Ready when Redis answers',
    responses: { 200: { description: 'Ready.', content: { 'application/json': readyReply } }, 503: { description: 'Redis does not answer.', content: { 'application/json': readyReply } } },
  }),
  route({
    method: 'get', path: '/metrics', tag: 'Operations', guard: 'none', summary: 'Prometheus metrics',
    responses: { 200: { description: 'Prometheus text exposition format.', content: { 'text/plain': z.string() } } },
  }),
];

export function healthRoutes(redis: Redis, registry: Registry): Router {
  const router = Router();
  // Who answers, so a starter can tell its own process from an earlier one on the same port.
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', service: 'gateway', pid: process.pid });
  });
  /** Ready when Redis answers: without it nothing can be queued, metered or authenticated. */
  router.get('/readyz', async (_req, res) => {
    const ok = await Promise.race([
      redis.ping().then(() => true, () => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1_000).unref()),
    ]);
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'unavailable', redis: ok ? 'ok' : 'unreachable' });
  });
  router.get('/metrics', async (_req, res) => {
    res.setHeader('content-type', registry.contentType);
    res.send(await registry.metrics());
  });
  return router;
}
