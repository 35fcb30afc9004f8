import { type RequestHandler, type Response, Router } from 'express';
import { JOURNEY_ID, JOURNEY_STATES, type JourneyDoc, JourneyError, type JourneyStore, TEMPLATE_KEY, templateInputSchema } from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import { ApiError } from '../errors';

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
    res.status(201).json({ template });
  });

  router.get('/v1/journeys/templates', ...guards.use, async (_req, res) => {
    res.json({ templates: await store.templates() });
  });

  router.get('/v1/journeys/templates/:key', ...guards.use, async (req, res) => {
    const key = templateKey.parse(req.params.key);
    const { version } = versionQuery.parse(req.query);
    const template = await store.template(key, version);
    if (!template) throw new ApiError('not_found', `No journey template "${key}"${version ? ` version ${version}` : ''}.`);
    res.json({ template, versions: (await store.templateVersions(key)).map((t) => ({ version: t.version, published_at: t.published_at, published_by: t.published_by })) });
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
    res.status(201).json(await store.view(doc));
  });

  router.get('/v1/journeys', ...guards.use, async (req, res) => {
    const q = listQuery.parse(req.query);
    const who = principalOf(res);
    if (q.user_id !== undefined && !isAdmin(res) && q.user_id !== who.user_id) throw new ApiError('forbidden', "Only an admin key lists another user's journeys.");
    const user = isAdmin(res) ? q.user_id : who.user_id;
    const docs = (await store.list({ ...(user !== undefined && { user }), ...(q.state && { state: q.state }), limit: q.limit })).filter(
      (d) => isAdmin(res) || d.project_id === who.project_id,
    );
    res.json({ journeys: await Promise.all(docs.map((d) => store.view(d))) });
  });

  router.get('/v1/journeys/:id', ...guards.use, async (req, res) => {
    res.json(await store.view(await owned(res, String(req.params.id))));
  });

  router.post('/v1/journeys/:id/cancel', ...guards.use, async (req, res) => {
    const doc = await owned(res, String(req.params.id));
    const next = await store.cancel(doc.id, res.locals.requestId as string).catch((e) => Promise.reject(asApi(e)));
    res.json(await store.view(next));
  });

  router.get('/v1/analytics/journeys/:template', ...guards.admin, async (req, res) => {
    const key = templateKey.parse(req.params.template);
    const { version } = versionQuery.parse(req.query);
    res.json(await store.stats(key, version).catch((e) => Promise.reject(asApi(e))));
  });

  return router;
}
