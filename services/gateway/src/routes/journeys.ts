import { type RequestHandler, type Response, Router } from 'express';
import { JOURNEY_ID, JOURNEY_STATES, type JourneyDoc, journeyDocSchema, JourneyError, type JourneyStore, TEMPLATE_KEY, templateInputSchema, templateSchema } from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import { ApiError } from '../errors';
import { moneySchema, route } from '../openapi/registry';

export interface JourneyRouteGuards {
  /** Any key that may chat: its own user's journeys. */
  use: RequestHandler[];
  admin: RequestHandler[];
}

const startBody = z.strictObject({
  template: z.string().regex(TEMPLATE_KEY),
  /** Default: the latest version. */
  version: z.number().int().min(1).optional(),
  /** The caller's own id for it (an order, a CRM record). */
  external_id: z.string().min(1).max(128).optional(),
});
const listQuery = z.strictObject({
  state: z.enum(JOURNEY_STATES).optional(),
  /** Admin only: one user's journeys (default: everyone's). */
  user_id: z.string().min(1).max(128).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});
const versionQuery = z.strictObject({ version: z.coerce.number().int().min(1).optional() });
const templateKey = z.string().regex(TEMPLATE_KEY, 'lower-case letters, digits and -');

const templateReply = templateSchema.meta({ id: 'JourneyTemplate' });
const templatesReply = z.object({ templates: z.array(templateReply).meta({ description: 'The latest version of each template.' }) });
const templateVersionsReply = z.object({
  template: templateReply,
  versions: z.array(z.object({ version: z.number().int(), published_at: z.string(), published_by: z.string().meta({ description: 'The key id (or `operator`) that published it.' }) })),
});
const stepView = z.object({
  key: z.string(),
  title: z.string(),
  required: z.boolean(),
  weight: z.number().int(),
  depends_on: z.array(z.string()),
  status: z.enum(['pending', 'completed']),
  completed_at: z.string().optional(),
  time_in_step_ms: z.number().int().optional().meta({ description: 'From the step becoming startable to its completion.' }),
  cost: moneySchema.meta({ description: 'Spend tagged to this step (or made by the request that completed it).' }),
  entries: z.number().int().meta({ description: 'Ledger entries counted in `cost`.' }),
});
const journeyView = journeyDocSchema
  .omit({ steps: true, cost_micros: true })
  .extend({
    progress_pct: z.number().meta({ description: 'Weighted share of the required steps done, 0-100 with one decimal.' }),
    steps: z.array(stepView),
    cost: z.object({ total: moneySchema, entries: z.number().int(), unassigned: moneySchema.meta({ description: 'Spend of the journey tagged to no step.' }) }),
  })
  .meta({ id: 'Journey' });
const journeysReply = z.object({ journeys: z.array(journeyView) });
const rate = z.number().nullable().meta({ description: '0-1; null when nothing reached it.' });
const stepStats = z.object({
  key: z.string(),
  title: z.string(),
  required: z.boolean(),
  reached: z.number().int().meta({ description: 'Journeys that completed its dependencies (all started ones when it has none).' }),
  completed: z.number().int(),
  conversion: rate,
  drop_off: z.number().int().meta({ description: 'Reached but not completed (active ones included).' }),
  drop_off_rate: rate,
  abandoned_here: z.number().int().meta({ description: 'Journeys abandoned or cancelled with this as their first open required step.' }),
  time_in_step_p50_ms: z.number().nullable(),
  time_in_step_p90_ms: z.number().nullable(),
});
const templateStats = z
  .object({
    template: z.string(),
    version: z.number().int(),
    started: z.number().int(),
    completed: z.number().int(),
    abandoned: z.number().int(),
    cancelled: z.number().int(),
    active: z.number().int(),
    completion_rate: rate,
    cost_completed: moneySchema.meta({ description: 'What the completed journeys cost.' }),
    cost_per_completed: moneySchema.nullable(),
    steps: z.array(stepStats),
  })
  .meta({ id: 'JourneyTemplateStats' });
const keyParams = z.object({ key: templateKey });
const idParams = z.object({ id: z.string().meta({ description: 'A journey id (`jrn_...`); any other shape is answered 404.' }) });
const json = <T extends z.ZodType>(schema: T) => ({ 'application/json': schema });

export const openapi = [
  route({
    method: 'put', path: '/v1/journeys/templates/:key', tag: 'Journeys', guard: 'admin',
    summary: 'Publish a new version of a journey template',
    description: 'Versions are immutable: each PUT adds the next one, and journeys already started keep theirs. A step completes on a catalog event of the journey (optionally matching `data` fields or the request\'s `x-tollgate-journey-step`).',
    params: keyParams,
    body: { content: json(templateInputSchema) },
    responses: { 201: { description: 'Published.', content: json(z.object({ template: templateReply })) } },
  }),
  route({
    method: 'get', path: '/v1/journeys/templates', tag: 'Journeys', guard: 'chat',
    summary: 'Every journey template, latest versions',
    responses: { 200: { description: 'The templates.', content: json(templatesReply) } },
  }),
  route({
    method: 'get', path: '/v1/journeys/templates/:key', tag: 'Journeys', guard: 'chat',
    summary: 'One journey template (default: its latest version) and its version list',
    params: keyParams,
    query: versionQuery,
    responses: { 200: { description: 'The template.', content: json(templateVersionsReply) } },
    errors: [404],
  }),
  route({
    method: 'post', path: '/v1/journeys', tag: 'Journeys', guard: 'chat',
    summary: "Start a journey for the key's own user",
    description: 'Starts a journey of a template (default: its latest version). Requests that carry `x-tollgate-journey: <id>` (and `x-tollgate-journey-step`) advance it and count their spend toward it.',
    body: { content: json(startBody) },
    responses: { 201: { description: 'Started.', content: json(journeyView) } },
    errors: [404, 409],
  }),
  route({
    method: 'get', path: '/v1/journeys', tag: 'Journeys', guard: 'chat',
    summary: "The key's own user's journeys (an admin's: anyone's), newest first",
    query: listQuery,
    responses: { 200: { description: 'The journeys.', content: json(journeysReply) } },
  }),
  route({
    method: 'get', path: '/v1/journeys/:id', tag: 'Journeys', guard: 'chat',
    summary: 'One journey: state, progress and cost per step',
    params: idParams,
    responses: { 200: { description: 'The journey.', content: json(journeyView) } },
    errors: [404],
  }),
  route({
    method: 'post', path: '/v1/journeys/:id/cancel', tag: 'Journeys', guard: 'chat',
    summary: 'Cancel an active journey',
    params: idParams,
    responses: { 200: { description: 'Cancelled.', content: json(journeyView) } },
    errors: [404, 409],
  }),
  route({
    method: 'get', path: '/v1/analytics/journeys/:template', tag: 'Journeys', guard: 'admin',
    summary: "A template version's conversion: per step reached, completed, drop-off, time in step; cost per completed journey",
    params: z.object({ template: templateKey }),
    query: versionQuery,
    responses: { 200: { description: 'The figures (default: the latest version).', content: json(templateStats) } },
    errors: [404],
  }),
];

const isAdmin = (res: Response) => {
  const p = principalOf(res);
  return p.operator || p.scopes.includes('admin');
};

/** Store errors carry messages written for the client. */
const asApi = (err: unknown) => (err instanceof JourneyError ? new ApiError(err.code, err.message) : err);

/**
 * Journeys: templates (admin publishes, anyone reads), journeys of the caller's own user (an admin
 * reads anyone's), and per-template-version analytics.
 */
export function journeyRoutes(guards: JourneyRouteGuards, store: JourneyStore): Router {
  const router = Router();

  const owned = async (res: Response, id: string): Promise<JourneyDoc> => {
    if (!JOURNEY_ID.test(id)) throw new ApiError('not_found', `No journey "${id}".`);
    const found = await store.get(id);
    if (!found) throw new ApiError('not_found', `No journey "${id}".`);
    const who = principalOf(res);
    if (!isAdmin(res) && (found.doc.user_id !== who.user_id || found.doc.project_id !== who.project_id)) {
      throw new ApiError('forbidden', "This journey belongs to another user: a key may only read its own user's journeys.");
    }
    return found.doc;
  };

  router.put('/v1/journeys/templates/:key', ...guards.admin, async (req, res) => {
    const key = templateKey.parse(req.params.key);
    const input = templateInputSchema.parse(req.body ?? {});
    const template = await store.publishTemplate(key, input, principalOf(res).key_id).catch((e) => Promise.reject(asApi(e)));
    res.status(201).json({ template } satisfies { template: z.input<typeof templateReply> });
  });

  router.get('/v1/journeys/templates', ...guards.use, async (_req, res) => {
    res.json({ templates: await store.templates() } satisfies z.input<typeof templatesReply>);
  });

  router.get('/v1/journeys/templates/:key', ...guards.use, async (req, res) => {
    const key = templateKey.parse(req.params.key);
    const { version } = versionQuery.parse(req.query);
    const template = await store.template(key, version);
    if (!template) throw new ApiError('not_found', `No journey template "${key}"${version ? ` version ${version}` : ''}.`);
    res.json({ template, versions: (await store.templateVersions(key)).map((t) => ({ version: t.version, published_at: t.published_at, published_by: t.published_by })) } satisfies z.input<typeof templateVersionsReply>);
  });

  router.post('/v1/journeys', ...guards.use, async (req, res) => {
    const body = startBody.parse(req.body ?? {});
    const who = principalOf(res);
    const { doc } = await store
      .start({ user_id: who.user_id, project_id: who.project_id }, body.template, {
        ...(body.version !== undefined && { version: body.version }),
        ...(body.external_id !== undefined && { external_id: body.external_id }),
        correlation_id: res.locals.requestId as string,
      })
      .catch((e) => Promise.reject(asApi(e)));
    res.status(201).json((await store.view(doc)) satisfies z.input<typeof journeyView>);
  });

  router.get('/v1/journeys', ...guards.use, async (req, res) => {
    const q = listQuery.parse(req.query);
    const who = principalOf(res);
    if (q.user_id !== undefined && !isAdmin(res) && q.user_id !== who.user_id) throw new ApiError('forbidden', "Only an admin key lists another user's journeys.");
    const user = isAdmin(res) ? q.user_id : who.user_id;
    const docs = (await store.list({ ...(user !== undefined && { user }), ...(q.state && { state: q.state }), limit: q.limit })).filter(
      (d) => isAdmin(res) || d.project_id === who.project_id,
    );
    res.json({ journeys: await Promise.all(docs.map((d) => store.view(d))) } satisfies z.input<typeof journeysReply>);
  });

  router.get('/v1/journeys/:id', ...guards.use, async (req, res) => {
    res.json((await store.view(await owned(res, String(req.params.id)))) satisfies z.input<typeof journeyView>);
  });

  router.post('/v1/journeys/:id/cancel', ...guards.use, async (req, res) => {
    const doc = await owned(res, String(req.params.id));
    const next = await store.cancel(doc.id, res.locals.requestId as string).catch((e) => Promise.reject(asApi(e)));
    res.json((await store.view(next)) satisfies z.input<typeof journeyView>);
  });

  router.get('/v1/analytics/journeys/:template', ...guards.admin, async (req, res) => {
    const key = templateKey.parse(req.params.template);
    const { version } = versionQuery.parse(req.query);
    res.json((await store.stats(key, version).catch((e) => Promise.reject(asApi(e)))) satisfies z.input<typeof templateStats>);
  });

  return router;
}
