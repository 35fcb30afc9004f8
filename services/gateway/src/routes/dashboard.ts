import { join } from 'node:path';
import express, { Router } from 'express';
import { z } from 'zod';
import { route } from '../openapi/registry';

const PUBLIC = join(__dirname, '..', '..', 'public', 'dashboard');
const UPLOT = join(require.resolve('uplot'), '..');

export const openapi = [
  route({
    method: 'get', path: '/dashboard', tag: 'Reference', guard: 'none',
    summary: 'The operator dashboard (HTML; it asks for an admin key and calls this API)',
    responses: { 200: { description: 'The page.', content: { 'text/html': z.string() } } },
  }),
];

/**
 * The operator dashboard: static files only. The page asks for an admin key and calls the API
 * with it, so the page itself reveals nothing.
 */
export function dashboardRoutes(): Router {
  const router = Router();
  router.get('/dashboard', (_req, res) => res.sendFile(join(PUBLIC, 'index.html')));
  // GET and HEAD only: serve-static would answer other methods with a bare 405 outside the one error shape.
  const vendor = express.static(UPLOT, { index: false, fallthrough: false });
  router.use('/dashboard/vendor', (req, res, next) => (req.method === 'GET' || req.method === 'HEAD' ? vendor(req, res, next) : next()));
  router.use('/dashboard', express.static(PUBLIC, { index: false }));
  return router;
}
