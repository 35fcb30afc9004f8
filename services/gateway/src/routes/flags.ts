import { Router } from 'express';
import {
  type ApplyResult,
  clientFeaturesSchema,
  type EventBus,
  FLAG_TYPES,
  FlagConflictError,
  flagContextSchema,
  FlagInputError,
  flagNameSchema,
  type FlagSnapshot,
  type FlagStore,
  flagView as view,
  flagWarnings,
  featureSchema,
  importEdit,
  prepareFeature,
  publishFlagChanges,
  RESERVED_FLAG_NAMES,
  segmentSchema,
} from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import { ApiError } from '../errors';
import type { Guards } from './guards';
import { route } from '../openapi/registry';

export interface FlagRouteDeps {
  store: FlagStore;
  /** The gateway's own snapshot: what `evaluate` answers from, refreshed after each write here. */
  snapshot: FlagSnapshot;
  bus: EventBus;
}

const evaluateBody = z.strictObject({ flag: flagNameSchema, context: flagContextSchema.default({}) });
const putBody = featureSchema.extend({ name: flagNameSchema.optional() });
const listQuery = z.object({ stale: z.enum(['true', 'false']).optional(), type: z.enum(Object.keys(FLAG_TYPES) as [keyof typeof FLAG_TYPES]).optional() });
const historyQuery = z.object({ name: z.string().max(200).optional(), limit: z.coerce.number().int().min(1).max(1000).default(50) });
const importQuery = z.object({ format: z.string().optional(), replace: z.enum(['true', 'false']).default('false') });

const nameParams = z.object({ name: z.string().meta({ description: 'The flag name.' }) });
const flagSchema = featureSchema
  .extend({
    createdAt: z.string(),
    meta: z.object({ updated_at: z.string(), updated_by: z.string() }),
    stale: z.boolean(),
    expected_lifetime_days: z.number().int().nullable(),
  })
  .meta({ id: 'Flag' });
const changeSchema = z.looseObject({
  name: z.string(),
  kind: z.enum(['flag', 'segment']),
  action: z.enum(['created', 'updated', 'deleted']),
  actor: z.string().optional(),
  at: z.string().optional(),
  before: z.unknown().optional(),
  after: z.unknown().optional(),
});
const listReply = z.object({ version: z.number().int(), flags: z.array(flagSchema), segments: z.array(segmentSchema), stale_count: z.number().int() });
const writeReply = z.object({ flag: flagSchema.nullable(), version: z.number().int(), changed: z.boolean(), warnings: z.array(z.string()).optional() });
const evaluateReply = z.object({
  enabled: z.boolean(),
  variant: z.object({ name: z.string(), enabled: z.boolean(), feature_enabled: z.boolean(), payload: z.object({ type: z.string(), value: z.string() }).optional() }),
  reason: z.string(),
  snapshot_version: z.number().int(),
});
const importReply = z.object({
  version: z.number().int(),
  created: z.number().int(),
  updated: z.number().int(),
  deleted: z.number().int(),
  unchanged: z.number().int(),
  segments_changed: z.number().int(),
  changes: z.array(changeSchema.pick({ name: true, kind: true, action: true })),
  warnings: z.array(z.string()),
});
const history = { 200: { description: 'Audited changes, newest first.', content: { 'application/json': z.object({ changes: z.array(changeSchema) }) } } };

export const openapi = [
  route({ method: 'get', path: '/v1/flags', tag: 'Flags', guard: 'admin', summary: 'Every flag and segment', query: listQuery, responses: { 200: { description: 'Flags (with staleness) and segments.', content: { 'application/json': listReply } } } }),
  route({ method: 'get', path: '/v1/flags/history', tag: 'Flags', guard: 'admin', summary: 'The audit log of flag changes', query: historyQuery, responses: history }),
  route({
    method: 'put', path: '/v1/flags/import', tag: 'Flags', guard: 'admin',
    summary: 'Import an Unleash client-features document',
    description: '`?format=unleash` is required; `replace=true` deletes the flags the document does not name.',
    query: importQuery,
    body: { content: { 'application/json': clientFeaturesSchema } },
    responses: { 200: { description: 'What changed.', content: { 'application/json': importReply } } },
    errors: [409],
  }),
  route({ method: 'post', path: '/v1/flags/evaluate', tag: 'Flags', guard: 'admin', summary: "Evaluate a flag for a context (the gateway's snapshot)", body: { content: { 'application/json': evaluateBody } }, responses: { 200: { description: 'The evaluation.', content: { 'application/json': evaluateReply } } }, errors: [404] }),
  route({ method: 'get', path: '/v1/flags/:name/history', tag: 'Flags', guard: 'admin', summary: "One flag's changes", params: nameParams, query: historyQuery, responses: history }),
  route({ method: 'get', path: '/v1/flags/:name', tag: 'Flags', guard: 'admin', summary: 'One flag', params: nameParams, responses: { 200: { description: 'The flag.', content: { 'application/json': flagSchema } } }, errors: [404] }),
  route({
    method: 'put', path: '/v1/flags/:name', tag: 'Flags', guard: 'admin', summary: 'Create or replace a flag',
    params: nameParams,
    body: { content: { 'application/json': putBody } },
    responses: { 200: { description: 'Replaced.', content: { 'application/json': writeReply } }, 201: { description: 'Created.', content: { 'application/json': writeReply } } },
    errors: [409],
  }),
  ...(['enable', 'disable'] as const).map((action) =>
    route({ method: 'post', path: `/v1/flags/:name/${action}`, tag: 'Flags', guard: 'admin', summary: `${action === 'enable' ? 'Enable' : 'Disable'} a flag`, params: nameParams, responses: { 200: { description: 'The flag now.', content: { 'application/json': writeReply } } }, errors: [404, 409] }),
  ),
  route({ method: 'delete', path: '/v1/flags/:name', tag: 'Flags', guard: 'admin', summary: 'Delete a flag', params: nameParams, responses: { 204: { description: 'Deleted.' } }, errors: [404, 409] }),
];

const actorOf = (res: { locals: Record<string, unknown> }) => {
  const p = principalOf(res);
  return p.operator ? 'operator' : `${p.user_id} (key ${p.key_id})`;
};

export function flagRoutes(guards: Guards, deps: FlagRouteDeps): Router {
  const router = Router();

  /** Applies, announces, and makes this gateway's own snapshot current before answering. */
  async function write(actor: string, edit: Parameters<FlagStore['apply']>[1]): Promise<ApplyResult> {
    let result: ApplyResult;
    try {
      result = await deps.store.apply(actor, edit);
    } catch (err) {
      if (err instanceof FlagConflictError) throw new ApiError('conflict', err.message);
      throw err;
    }
    if (result.changes.length) {
      await publishFlagChanges(deps.bus, result, actor);
      await deps.snapshot.refresh();
    }
    return result;
  }

  router.get('/v1/flags', ...guards.admin, async (req, res) => {
    const q = listQuery.parse(req.query);
    const state = await deps.store.load();
    const now = Date.now();
    let flags = state.flags.map((f) => view(f, now)).sort((a, b) => a.name.localeCompare(b.name));
    if (q.stale) flags = flags.filter((f) => f.stale === (q.stale === 'true'));
    if (q.type) flags = flags.filter((f) => f.type === q.type);
    res.json({ version: state.version, flags, segments: state.segments.sort((a, b) => a.id - b.id), stale_count: flags.filter((f) => f.stale).length });
  });

  router.get('/v1/flags/history', ...guards.admin, async (req, res) => {
    const q = historyQuery.parse(req.query);
    res.json({ changes: await deps.store.history({ ...(q.name !== undefined && { name: q.name }), limit: q.limit }) });
  });

  router.put('/v1/flags/import', ...guards.admin, async (req, res) => {
    const q = importQuery.parse(req.query);
    if (q.format !== 'unleash') throw new ApiError('invalid_request', 'Say which format the document is in: ?format=unleash (an Unleash client-features document {version, features, segments}).');
    const doc = clientFeaturesSchema.parse(req.body);
    const names = new Set<string>();
    for (const f of doc.features) {
      if (names.has(f.name)) throw new ApiError('invalid_request', `The document names the flag "${f.name}" twice.`);
      if (RESERVED_FLAG_NAMES.has(f.name)) throw new ApiError('invalid_request', `"${f.name}" is a reserved word of the flags API; rename the flag.`);
      names.add(f.name);
    }
    const state = await deps.store.load();
    const known = q.replace === 'true' ? { flags: [], segments: doc.segments } : { flags: state.flags, segments: [...state.segments, ...doc.segments] };
    const warnings = flagWarnings(doc.features, known);
    const result = await write(actorOf(res), importEdit(doc, q.replace === 'true'));
    const count = (action: string) => result.changes.filter((c) => c.kind === 'flag' && c.action === action).length;
    res.json({
      version: result.version,
      created: count('created'),
      updated: count('updated'),
      deleted: count('deleted'),
      unchanged: doc.features.length - count('created') - count('updated'),
      segments_changed: result.changes.filter((c) => c.kind === 'segment').length,
      changes: result.changes.map((c) => ({ name: c.name, kind: c.kind, action: c.action })),
      warnings,
    });
  });

  router.post('/v1/flags/evaluate', ...guards.admin, (req, res) => {
    const body = evaluateBody.parse(req.body ?? {});
    const result = deps.snapshot.evaluate(body.flag, body.context);
    if (result.error_code === 'FLAG_NOT_FOUND') throw new ApiError('not_found', `No flag named "${body.flag}".`);
    res.json({ enabled: result.enabled, variant: result.variant, reason: result.reason, snapshot_version: deps.snapshot.version });
  });

  router.get('/v1/flags/:name/history', ...guards.admin, async (req, res) => {
    const q = historyQuery.parse(req.query);
    res.json({ changes: await deps.store.history({ name: String(req.params.name), limit: q.limit }) });
  });

  router.get('/v1/flags/:name', ...guards.admin, async (req, res) => {
    const flag = await deps.store.get(String(req.params.name));
    if (!flag) throw new ApiError('not_found', `No flag named "${String(req.params.name)}".`);
    res.json(view(flag));
  });

  router.put('/v1/flags/:name', ...guards.admin, async (req, res) => {
    const name = flagNameSchema.parse(String(req.params.name));
    const body = putBody.parse(req.body ?? {});
    let feature;
    try {
      feature = prepareFeature(name, body);
    } catch (err) {
      if (err instanceof FlagInputError) throw new ApiError('invalid_request', err.message);
      throw err;
    }
    const warnings = flagWarnings([feature], await deps.store.load());
    const result = await write(actorOf(res), () => ({ put: [feature] }));
    const stored = await deps.store.get(name);
    const created = result.changes[0]?.action === 'created';
    res.status(created ? 201 : 200).json({ flag: stored && view(stored), version: result.version, changed: result.changes.length > 0, warnings });
  });

  for (const [path, enabled] of [['enable', true], ['disable', false]] as const) {
    router.post(`/v1/flags/:name/${path}`, ...guards.admin, async (req, res) => {
      const name = String(req.params.name);
      let found = true;
      const result = await write(actorOf(res), (current) => {
        const f = current.flags.find((x) => x.name === name);
        found = f !== undefined;
        if (!f) return {};
        const { meta: _m, ...feature } = f;
        return { put: [{ ...feature, enabled }] };
      });
      if (!found) throw new ApiError('not_found', `No flag named "${name}".`);
      const stored = await deps.store.get(name);
      res.json({ flag: stored && view(stored), version: result.version, changed: result.changes.length > 0 });
    });
  }

  router.delete('/v1/flags/:name', ...guards.admin, async (req, res) => {
    const name = String(req.params.name);
    const result = await write(actorOf(res), () => ({ remove: [name] }));
    if (!result.changes.length) throw new ApiError('not_found', `No flag named "${name}".`);
    res.status(204).end();
  });

  return router;
}
