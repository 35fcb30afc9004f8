import { type ApiKeyStore, KEY_SCOPES, newKeySchema } from '@tollgate/shared';
import { z } from 'zod';
import { route } from '../openapi/registry';
import { Router } from 'express';
import { ApiError } from '../errors';
import type { Guards } from './guards';

const keyRecord = z
  .object({ key_id: z.string(), name: z.string(), user_id: z.string(), project_id: z.string(), scopes: z.array(z.enum(KEY_SCOPES)), created_at: z.string() })
  .meta({ id: 'ApiKey' });
const createdKey = keyRecord.extend({ key: z.string().meta({ description: 'The key itself (`tg_...`), shown only now.' }), note: z.string() });
const keyParams = z.object({ keyId: z.string().meta({ examples: ["key_0123456789abcdef"] }) });

export const openapi = [
  route({
    method: 'post', path: '/v1/admin/keys', tag: 'Keys', guard: 'admin',
    summary: 'Create an API key for a user and project',
    body: { required: false, content: { 'application/json': newKeySchema } },
    responses: { 201: { description: 'The key, shown once (only its hash is stored).', content: { 'application/json': createdKey } } },
  }),
  route({
    method: 'get', path: '/v1/admin/keys', tag: 'Keys', guard: 'admin',
    summary: 'Every API key (never the keys themselves)',
    responses: { 200: { description: 'Key records.', content: { 'application/json': z.object({ keys: z.array(keyRecord) }) } } },
  }),
  route({
    method: 'delete', path: '/v1/admin/keys/:keyId', tag: 'Keys', guard: 'admin',
    summary: 'Revoke an API key (at once, on every gateway)',
    params: keyParams,
    responses: { 204: { description: 'Revoked.' } },
    errors: [404],
  }),
];

export function adminRoutes(guards: Guards, keys: ApiKeyStore): Router {
  const router = Router();
  router.post('/v1/admin/keys', ...guards.admin, async (req, res) => {
    const { key, record } = await keys.create(req.body ?? {});
    const reply: z.input<typeof createdKey> = { key, ...record, note: 'Store this key now: only its hash is kept.' };
    res.status(201).json(reply);
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
