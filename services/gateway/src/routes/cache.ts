import { Router } from 'express';
import { type CacheSettingsStore, cacheSettingsSchema, formatUsd, type ResponseCache } from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import { ApiError } from '../errors';
import type { Guards } from './guards';
import { microsSchema, moneySchema, route } from '../openapi/registry';

const projectId = z.string().min(1).max(128);
const statsQuery = z.strictObject({ project_id: projectId.optional() });
const purgeQuery = z.strictObject({ project_id: projectId });

const kindStats = z.object({
  kind: z.string(),
  hits: z.number().int(),
  misses: z.number().int(),
  bypasses: z.number().int(),
  refreshes: z.number().int(),
  stores: z.number().int(),
  saved_micros: microsSchema,
  hit_ratio: z.number().nullable(),
});
const statsReply = z.object({
  scope: z.union([z.literal('all'), z.object({ project_id: z.string() })]),
  hit_ratio: z.number().nullable(),
  hits: z.number().int(),
  misses: z.number().int(),
  saved: moneySchema,
  kinds: z.array(kindStats),
});
const settingsReply = z.object({ project_id: z.string(), settings: cacheSettingsSchema });
const projectParams = z.object({ project: projectId });
const settingsPatch = cacheSettingsSchema.partial();

export const openapi = [
  route({
    method: 'get', path: '/v1/cache/stats', tag: 'Cache', guard: 'costs',
    summary: 'Hit ratio and money saved',
    description: "A key sees its own project's figures; an admin any project's (`project_id`) or everyone's.",
    query: statsQuery,
    responses: { 200: { description: 'Per kind (chat, rag, vision) and overall.', content: { 'application/json': statsReply } } },
  }),
  route({
    method: 'delete', path: '/v1/cache', tag: 'Cache', guard: 'admin',
    summary: "Purge a project's cache entries",
    query: purgeQuery,
    responses: { 200: { description: 'How many keys were removed.', content: { 'application/json': z.object({ project_id: z.string(), purged_keys: z.number().int() }) } } },
  }),
  route({
    method: 'get', path: '/v1/cache/settings/:project', tag: 'Cache', guard: 'admin',
    summary: "A project's cache TTLs and cap",
    params: projectParams,
    responses: { 200: { description: 'The settings (the defaults when none are set).', content: { 'application/json': settingsReply } } },
  }),
  route({
    method: 'put', path: '/v1/cache/settings/:project', tag: 'Cache', guard: 'admin',
    summary: "Change a project's cache TTLs and cap (fields given only)",
    params: projectParams,
    body: { content: { 'application/json': settingsPatch } },
    responses: { 200: { description: 'The settings now.', content: { 'application/json': settingsReply } } },
  }),
];

/**
 * The cache's operator side: hit ratio and money saved (a key sees its own project's; an admin
 * anyone's or everyone's), per-project TTL defaults and cap, and purging a project's entries.
 */
export function cacheRoutes(guards: Pick<Guards, 'costs' | 'admin'>, cache: ResponseCache, settings: CacheSettingsStore): Router {
  const router = Router();

  router.get('/v1/cache/stats', ...guards.costs, async (req, res) => {
    const q = statsQuery.parse(req.query);
    const who = principalOf(res);
    const admin = who.scopes.includes('admin');
    if (!admin && q.project_id !== undefined && q.project_id !== who.project_id) throw new ApiError('forbidden', "This key may only read its own project's cache.");
    const project = admin ? q.project_id : who.project_id;
    const kinds = await cache.stats(project);
    const hits = kinds.reduce((n, k) => n + k.hits, 0);
    const misses = kinds.reduce((n, k) => n + k.misses, 0);
    const saved = kinds.reduce((n, k) => n + k.saved_micros, 0);
    const reply: z.input<typeof statsReply> = {
      scope: project === undefined ? 'all' : { project_id: project },
      hit_ratio: hits + misses === 0 ? null : hits / (hits + misses),
      hits,
      misses,
      saved: { micros: saved, usd: formatUsd(saved) },
      kinds,
    };
    res.json(reply);
  });

  router.delete('/v1/cache', ...guards.admin, async (req, res) => {
    const q = purgeQuery.parse(req.query);
    res.json({ project_id: q.project_id, purged_keys: await cache.purge(q.project_id) });
  });

  router.get('/v1/cache/settings/:project', ...guards.admin, async (req, res) => {
    const project = projectId.parse(req.params.project);
    res.json({ project_id: project, settings: await settings.get(project) });
  });

  router.put('/v1/cache/settings/:project', ...guards.admin, async (req, res) => {
    const project = projectId.parse(req.params.project);
    const patch = settingsPatch.parse(req.body ?? {});
    res.json({ project_id: project, settings: await settings.set(project, patch) });
  });

  return router;
}
