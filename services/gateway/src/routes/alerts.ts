import { type RequestHandler, type Response, Router } from 'express';
import type Redis from 'ioredis';
import {
  ALERT_SCOPES,
  ALERT_STATES,
  alertingKeys,
  alertRecordSchema,
  type AlertStore,
  type AlertViewer,
  canSee,
  parseAlertEntry,
  Silences,
  type WebhookTargets,
  silenceInputSchema,
  silenceSchema,
  webhookDeadLetterSchema,
  webhookInputSchema,
  webhookNameSchema,
} from '@tollgate/shared';
import { z } from 'zod';
import { type Principal, principalOf, stillAuthorized } from '../auth/middleware';
import { ApiError } from '../errors';
import { eventStream, route } from '../openapi/registry';

type StreamReply = Array<[string, Array<[string, string[] | null]>]> | null;

const STREAM_ID = /^\d{1,20}-\d{1,20}$/;
const HEARTBEAT_MS = 15_000;

const sinceSchema = z
  .string()
  .max(40)
  .transform((raw, ctx) => {
    const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
    if (!Number.isFinite(ms)) {
      ctx.addIssue({ code: 'custom', message: 'expected an ISO date-time or epoch milliseconds' });
      return z.NEVER;
    }
    return ms;
  });

const listQuery = z.strictObject({
  scope: z.enum(ALERT_SCOPES).optional(),
  scope_id: z.string().min(1).max(128).optional(),
  state: z.enum(ALERT_STATES).optional(),
  since: sinceSchema.optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

const deadLetterQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).optional() });
const silenceId = z.string().min(1).max(64);
const alertId = z.string().min(1).max(128);
const streamHeaders = z.object({ 'last-event-id': z.string().optional().meta({ description: 'Resume after this alert stream id (EventSource sends it on reconnect).' }) });
const streamQuery = z.object({ last_event_id: z.string().optional().meta({ description: 'The same as the Last-Event-ID header, for clients that cannot set headers.' }) });

const alertSchema = alertRecordSchema.meta({ id: 'Alert' });
const webhookSchema = z.object({ name: z.string(), url: z.string(), created_at: z.string() }).meta({ id: 'WebhookTarget' });
const webhookPutReply = z.object({
  webhook: webhookSchema,
  secret: z.string().optional().meta({ description: 'Only when generated (no secret sent on creation): signs every delivery (HMAC-SHA256); not shown again.' }),
  note: z.string().optional(),
});
const silenceReply = silenceSchema.meta({ id: 'Silence' });

const READ = 'A key sees the alerts of its own user and project; an admin every alert, global and ops ones included.';
export const openapi = [
  route({
    method: 'get', path: '/v1/alerts', tag: 'Alerts', guard: 'costs',
    summary: 'Alert history, newest first', description: READ,
    query: listQuery,
    responses: { 200: { description: 'Alerts.', content: { 'application/json': z.object({ alerts: z.array(alertSchema) }) } } },
  }),
  route({
    method: 'get', path: '/v1/alerts/stream', tag: 'Alerts', guard: 'costs',
    summary: 'Live alerts (server-sent events)',
    description: `${READ} Events: \`alert\` (data: an \`Alert\`, id: its stream id) and \`gap\` (alerts after Last-Event-ID were trimmed); a comment heartbeat every 15 s. A key revoked while the stream is open ends it.`,
    headers: streamHeaders,
    query: streamQuery,
    responses: { 200: { description: 'The event stream.', content: eventStream('`event: alert` with `data: <Alert JSON>` and `id: <stream id>`; `event: gap` with `data: {"last_event_id", "oldest_retained"}`.') } },
  }),
  route({
    method: 'get', path: '/v1/alerts/webhooks', tag: 'Alerts', guard: 'admin',
    summary: 'Webhook targets',
    responses: { 200: { description: 'Targets (their secrets are never shown).', content: { 'application/json': z.object({ webhooks: z.array(webhookSchema) }) } } },
  }),
  route({
    method: 'get', path: '/v1/alerts/webhooks/dead-letters', tag: 'Alerts', guard: 'admin',
    summary: 'Webhook deliveries that failed every attempt',
    query: deadLetterQuery,
    responses: { 200: { description: 'Dead letters.', content: { 'application/json': z.object({ dead_letters: z.array(webhookDeadLetterSchema) }) } } },
  }),
  route({
    method: 'put', path: '/v1/alerts/webhooks/:name', tag: 'Alerts', guard: 'admin',
    summary: 'Create or replace a webhook target',
    params: z.object({ name: webhookNameSchema }),
    body: { content: { 'application/json': webhookInputSchema } },
    responses: {
      200: { description: 'Replaced.', content: { 'application/json': webhookPutReply } },
      201: { description: 'Created.', content: { 'application/json': webhookPutReply } },
    },
  }),
  route({
    method: 'delete', path: '/v1/alerts/webhooks/:name', tag: 'Alerts', guard: 'admin',
    summary: 'Remove a webhook target',
    params: z.object({ name: webhookNameSchema }),
    responses: { 204: { description: 'Removed.' } },
    errors: [404],
  }),
  route({
    method: 'get', path: '/v1/alerts/silences', tag: 'Alerts', guard: 'admin',
    summary: 'Active silences',
    responses: { 200: { description: 'Silences in force.', content: { 'application/json': z.object({ silences: z.array(silenceReply) }) } } },
  }),
  route({
    method: 'post', path: '/v1/alerts/silences', tag: 'Alerts', guard: 'admin',
    summary: 'Silence matching alerts until a time (recorded and streamed, not sent to webhooks)',
    body: { content: { 'application/json': silenceInputSchema } },
    responses: { 201: { description: 'The silence.', content: { 'application/json': z.object({ silence: silenceReply }) } } },
  }),
  route({
    method: 'delete', path: '/v1/alerts/silences/:id', tag: 'Alerts', guard: 'admin',
    summary: 'End a silence',
    params: z.object({ id: silenceId }),
    responses: { 204: { description: 'Removed.' } },
    errors: [404],
  }),
  route({
    method: 'get', path: '/v1/alerts/:alertId', tag: 'Alerts', guard: 'costs',
    summary: 'One alert', description: READ,
    params: z.object({ alertId }),
    responses: { 200: { description: 'The alert.', content: { 'application/json': z.object({ alert: alertSchema }) } } },
    errors: [404],
  }),
];

function viewerOf(p: Principal): AlertViewer {
  return p.operator || p.scopes.includes('admin') ? { all: true } : { all: false, user_id: p.user_id, project_id: p.project_id };
}

function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1;
}

export interface AlertRouteDeps {
  redis: Redis;
  namespace: string;
  alerts: AlertStore;
  webhooks: WebhookTargets;
}

/**
 * Alert history, the live alert feed (SSE), webhook targets and silences. Readers see the alerts of their
 * own user and project; operators (admin) see every alert, global and ops ones included.
 */
export function alertRoutes(guards: { read: RequestHandler[]; admin: RequestHandler[] }, deps: AlertRouteDeps): Router {
  const router = Router();
  const streamKey = alertingKeys(deps.namespace).alertsStream;

  router.get('/v1/alerts', ...guards.read, async (req, res) => {
    const q = listQuery.parse(req.query);
    const alerts = await deps.alerts.list(q, viewerOf(principalOf(res)));
    res.json({ alerts });
  });

  /**
   * Server-sent events from the alerts stream. Each event's id is its stream id, so a client that
   * reconnects with `Last-Event-ID` (EventSource does) continues right after the last alert it got.
   */
  router.get('/v1/alerts/stream', ...guards.read, async (req, res) => {
    const viewer = viewerOf(principalOf(res));
    const resume = req.header('last-event-id') ?? (typeof req.query.last_event_id === 'string' ? req.query.last_event_id : undefined);
    if (resume !== undefined && !STREAM_ID.test(resume)) {
      throw new ApiError('invalid_request', 'Last-Event-ID must be an alert stream id such as 1714000000000-0.');
    }
    let cursor = resume;
    if (cursor === undefined) {
      const [newest] = (await deps.redis.xrevrange(streamKey, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
      cursor = newest?.[0] ?? '0-0';
    }

    res.status(200);
    res.setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-cache, no-transform');
    res.setHeader('connection', 'keep-alive');
    res.setHeader('x-accel-buffering', 'no');
    res.flushHeaders();
    res.write('retry: 2000\n\n');
    if (resume !== undefined) await announceGap(res, resume);

    // XREAD BLOCK holds its connection, so each client reads on its own.
    const reader = deps.redis.duplicate();
    let open = true;
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    res.on('close', () => {
      open = false;
      clearInterval(heartbeat);
      reader.disconnect();
    });
    try {
      while (open && !res.destroyed) {
        const reply = (await reader.xread('COUNT', 100, 'BLOCK', 5_000, 'STREAMS', streamKey, cursor)) as StreamReply;
        // A key revoked while its stream is open gets nothing more: the stream ends.
        if (!(await stillAuthorized(res))) break;
        for (const [, entries] of reply ?? []) {
          for (const [id, fields] of entries) {
            cursor = id;
            const entry = parseAlertEntry(id, fields);
            if (!entry || !canSee(viewer, entry.alert)) continue;
            res.write(`id: ${id}\nevent: alert\ndata: ${JSON.stringify(entry.alert)}\n\n`);
          }
        }
      }
    } catch {
      // The client went away (the reader was disconnected) or Redis did: either way the stream ends.
    } finally {
      clearInterval(heartbeat);
      reader.disconnect();
      if (!res.writableEnded) res.end();
    }
  });

  /** Tells a resuming client when alerts after its last one may have been trimmed from the stream. */
  async function announceGap(res: Response, resume: string): Promise<void> {
    const [oldest] = (await deps.redis.xrange(streamKey, '-', '+', 'COUNT', 1)) as Array<[string, string[]]>;
    if (oldest && compareIds(oldest[0], resume) > 0) {
      res.write(`event: gap\ndata: ${JSON.stringify({ last_event_id: resume, oldest_retained: oldest[0] })}\n\n`);
    }
  }

  router.get('/v1/alerts/webhooks', ...guards.admin, async (_req, res) => {
    res.json({ webhooks: await deps.webhooks.list() });
  });

  router.get('/v1/alerts/webhooks/dead-letters', ...guards.admin, async (req, res) => {
    const { limit } = deadLetterQuery.parse(req.query);
    res.json({ dead_letters: await deps.webhooks.deadLetters(limit) });
  });

  router.put('/v1/alerts/webhooks/:name', ...guards.admin, async (req, res) => {
    const name = webhookNameSchema.parse(req.params.name);
    const { target, created, secret } = await deps.webhooks.put(name, req.body ?? {});
    res.status(created ? 201 : 200).json({
      webhook: target,
      ...(secret && { secret, note: 'Store this secret now: it signs every delivery and is not shown again.' }),
    });
  });

  router.delete('/v1/alerts/webhooks/:name', ...guards.admin, async (req, res) => {
    if (!(await deps.webhooks.remove(webhookNameSchema.parse(req.params.name)))) {
      throw new ApiError('not_found', 'No webhook target with that name.');
    }
    res.status(204).end();
  });

  const silences = new Silences(deps.redis, deps.namespace);

  router.get('/v1/alerts/silences', ...guards.admin, async (_req, res) => {
    res.json({ silences: await silences.active() });
  });

  router.post('/v1/alerts/silences', ...guards.admin, async (req, res) => {
    const who = principalOf(res);
    res.status(201).json({ silence: await silences.create(req.body ?? {}, who.operator ? 'operator' : who.key_id) });
  });

  router.delete('/v1/alerts/silences/:id', ...guards.admin, async (req, res) => {
    if (!(await silences.remove(silenceId.parse(req.params.id)))) throw new ApiError('not_found', 'No silence with that id.');
    res.status(204).end();
  });

  router.get('/v1/alerts/:alertId', ...guards.read, async (req, res) => {
    const alert = await deps.alerts.get(alertId.parse(req.params.alertId));
    if (!alert || !canSee(viewerOf(principalOf(res)), alert)) throw new ApiError('not_found', 'No alert with that id.');
    res.json({ alert });
  });

  return router;
}
