import { Router } from 'express';
import { type CacheSettingsStore, cacheSettingsSchema, formatUsd, type ResponseCache } from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import { ApiError } from '../errors';
import type { Guards } from './guards';

const projectId = z.string().min(1).max(128);
const statsQuery = z.strictObject({ project_id: projectId.optional() });
const purgeQuery = z.strictObject({ project_id: projectId });

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
    res.json({
      scope: project === undefined ? 'all' : { project_id: project },
      hit_ratio: hits + misses === 0 ? null : hits / (hits + misses),
      hits,
      misses,
      saved: { micros: saved, usd: formatUsd(saved) },
      kinds,
    });
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
    const patch = cacheSettingsSchema.partial().parse(req.body ?? {});
    res.json({ project_id: project, settings: await settings.set(project, patch) });
  });

  return router;
}
