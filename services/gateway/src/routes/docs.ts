import { dirname, join } from 'node:path';
import express, { Router } from 'express';
import { z } from 'zod';
import { route } from '../openapi/registry';

const PUBLIC = join(__dirname, '..', '..', 'public', 'docs');
const SWAGGER_UI = dirname(require.resolve('swagger-ui-dist/package.json'));

export const openapi = [
  route({
    method: 'get', path: '/openapi.json', tag: 'Reference', guard: 'none',
    summary: 'This OpenAPI 3.1 document',
    description: 'Generated from the zod schemas the routes validate with; the same as docs/openapi.json in the repository.',
    responses: { 200: { description: 'The document.', content: { 'application/json': z.record(z.string(), z.unknown()) } } },
  }),
  route({
    method: 'get', path: '/docs', tag: 'Reference', guard: 'none',
    summary: 'The API reference, rendered (Swagger UI, served from the gateway)',
    responses: { 200: { description: 'The page.', content: { 'text/html': z.string() } } },
  }),
];

/**
 * `GET /openapi.json` and the reference page at `/docs`. The document is built and serialised
 * once, on the first request (it is imported lazily, so a gateway that is never asked pays nothing).
 */
export function docsRoutes(): Router {
  const router = Router();
  let body: string | undefined;
  router.get('/openapi.json', (_req, res) => {
    // Required here, not imported: the document imports every route file, this one included.
    body ??= JSON.stringify((require('../openapi/document') as typeof import('../openapi/document')).openApiDocument());
    res.type('application/json').send(body);
  });
  router.get('/docs', (_req, res) => res.sendFile(join(PUBLIC, 'index.html')));
  // GET and HEAD only, as for the dashboard: other methods get the one error shape, not serve-static's 405.
  const vendor = express.static(SWAGGER_UI, { index: false, fallthrough: false });
  router.use('/docs/vendor', (req, res, next) => (req.method === 'GET' || req.method === 'HEAD' ? vendor(req, res, next) : next()));
  router.use('/docs', express.static(PUBLIC, { index: false }));
  return router;
}
