import type { ApiKeyStore } from '@tollgate/shared';
import { Router } from 'express';
import { ApiError } from '../errors';
import type { Guards } from './guards';

export function adminRoutes(guards: Guards, keys: ApiKeyStore): Router {
  const router = Router();
  router.post('/v1/admin/keys', ...guards.admin, async (req, res) => {
    const { key, record } = await keys.create(req.body ?? {});
    res.status(201).json({ key, ...record, note: 'Store this key now: only its hash is kept.' });
  });
  router.get('/v1/admin/keys', ...guards.admin, async (_req, res) => {
    res.json({ keys: await keys.list() });
  });
  router.delete('/v1/admin/keys/:keyId', ...guards.admin, async (req, res) => {
    if (!(await keys.revoke(String(req.params.keyId)))) throw new ApiError('not_found', 'No API key with that id.');
    res.status(204).end();
  });
  return router;
}
