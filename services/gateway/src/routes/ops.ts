import { type RequestHandler, Router } from 'express';
import type Redis from 'ioredis';
import { type ErrorRateTracker, EventTail, type JobCountSource } from '@tollgate/shared';
import { z } from 'zod';
import { stillAuthorized } from '../auth/middleware';
import type { GatewayMetrics } from '../metrics';
import { eventStream, route } from '../openapi/registry';

export interface OpsRouteDeps {
  redis: Redis;
  namespace: string;
  metrics: GatewayMetrics;
  errorRates: ErrorRateTracker;
  /** A partitioned queue reports its partitions summed, under its one name. */
  queues: readonly JobCountSource[];
  /** The bus's partitions, as the services use them; default 1. */
  busPartitions?: number;
}

const typePattern = z.string().regex(/^(\*|[a-z_]+(\.[a-z_*]+)?)$/, 'an event type or pattern such as workflow.* or *');
const streamQuery = z.strictObject({
  types: z
    .string()
    .max(500)
    .optional()
    .transform((s) => (s ? s.split(',').map((t) => t.trim()).filter(Boolean) : ['*']))
    .pipe(z.array(typePattern).min(1).max(20)),
});

const HEARTBEAT_MS = 15_000;

const jobCounts = z.partialRecord(z.enum(['waiting', 'active', 'delayed', 'failed', 'completed']), z.number().int());
const statusReply = z.object({
  breakers: z.array(z.object({ breaker: z.string(), state: z.string().meta({ description: 'closed, open or half_open.' }) })),
  error_rates: z.unknown().meta({ description: 'Errors per service and category over the recent window.' }),
  queues: z.record(z.string(), jobCounts),
  at: z.string(),
});

export const openapi = [
  route({
    method: 'get', path: '/v1/ops/status', tag: 'Operations', guard: 'admin',
    summary: 'Circuit breakers, error rates, queue depths',
    responses: { 200: { description: 'The operator view.', content: { 'application/json': statusReply } } },
  }),
  route({
    method: 'get', path: '/v1/events/stream', tag: 'Operations', guard: 'admin',
    summary: 'Live bus events (server-sent events), filtered by type',
    description: 'A view: nothing is acknowledged. Each event: `id` (stream id), `event` (its type), `data` (the envelope: id, type, version, occurred_at, source, correlation_id, data). A key revoked while the stream is open ends it.',
    query: streamQuery,
    responses: { 200: { description: 'The event stream.', content: eventStream('`event: <type>` with `data: <event envelope JSON>`; comment heartbeats every 15 s.') } },
  }),
];

/** What operators watch: breaker states, error rates, queue depths, and the live event stream. */
export function opsRoutes(admin: RequestHandler[], deps: OpsRouteDeps): Router {
  const router = Router();

  router.get('/v1/ops/status', ...admin, async (_req, res) => {
    const queues = Object.fromEntries(
      await Promise.all(deps.queues.map(async (q) => [q.name, await q.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed')] as const)),
    );
    res.json({
      breakers: [...deps.metrics.breakers].map(([breaker, state]) => ({ breaker, state })),
      error_rates: deps.errorRates.snapshot(),
      queues,
      at: new Date().toISOString(),
    });
  });

  /** Live bus events as server-sent events, filtered by type; a view, so nothing is acked. */
  router.get('/v1/events/stream', ...admin, async (req, res) => {
    const { types } = streamQuery.parse(req.query);
    const tail = new EventTail({ redis: deps.redis, prefix: deps.namespace, partitions: deps.busPartitions, types }, async (event, streamId) => {
      // A key revoked while its stream is open gets nothing more: the stream ends.
      if (!(await stillAuthorized(res))) {
        res.end();
        return;
      }
      res.write(`id: ${streamId}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
    });
    // The tail's position is fixed before the client sees the stream open, so an event published
    // once the headers arrived is never missed (the dashboard's first cost event was, under load).
    await tail.start();
    if (res.destroyed) return void tail.stop();
    res.on('close', () => void tail.stop());
    res.status(200);
    res.setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-cache, no-transform');
    res.setHeader('x-accel-buffering', 'no');
    res.flushHeaders();
    res.write('retry: 2000\n\n');
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    res.on('close', () => clearInterval(heartbeat));
  });

  return router;
}
