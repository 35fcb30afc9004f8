import { Router } from 'express';
import {
  isExternal,
  type LivePriceTable,
  priceVersionInputSchema,
  SEED_PRICE_TABLE,
  selectPriceVersion,
  TollgateError,
  toUtcDate,
} from '@tollgate/shared';
import { z } from 'zod';
import { ApiError } from '../errors';
import { MICROS_NOTE, microsSchema, route } from '../openapi/registry';
import type { Guards } from './guards';

const versionId = z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'version ids are 1-64 characters of A-Z a-z 0-9 . _ : -');
const listQuery = z.object({ at: z.iso.datetime().optional().meta({ description: 'Which version is in force at this instant (default: now).' }) });
const versionParams = z.object({ version: versionId });

const rate = (what: string) => microsSchema.optional().meta({ description: `${what}. ${MICROS_NOTE}` });
const modelPrice = z
  .object({
    input_per_mtok: rate('Per 1M input tokens'),
    cached_input_per_mtok: rate('Per 1M cached input tokens (default: the input rate)'),
    output_per_mtok: rate('Per 1M output tokens'),
    reasoning_per_mtok: rate('Per 1M reasoning tokens (default: the output rate)'),
    per_image: rate('Per image'),
    per_grounded_prompt: rate('Per grounded prompt (a call that ran at least one search)'),
    per_search_query: rate('Per unique search query'),
    per_call: rate('External operation: per call'),
    per_unit: rate('External operation: per unit'),
    per_1k_units: rate('External operation: per 1,000 units'),
  })
  .meta({ id: 'ModelPrice', description: 'Rates of one model or external operation; a missing rate is not priced (never zero).' });
const source = z.enum(['seed', 'file', 'api']).meta({ description: 'Built in, from PRICE_TABLE_FILE, or written through this API (only those can change).' });
const priceVersion = z
  .object({
    version: z.string(),
    effective_from: z.string().meta({ description: 'ISO date-time (UTC) from which it prices.' }),
    models: z.record(z.string().meta({ description: '`provider/model`' }), modelPrice),
    source,
  })
  .meta({ id: 'PriceVersion' });
const listReply = z.object({
  in_force: z.string().meta({ description: 'The version in force at `at`.' }),
  versions: z.array(z.object({ version: z.string(), effective_from: z.string(), source, prices: z.number().int().meta({ description: 'How many models and operations it prices.' }) })),
});
const operationsReply = z.object({
  price_version: z.string(),
  operations: z.array(
    z.object({ operation: z.string(), per_call_micros: microsSchema.optional(), per_unit_micros: microsSchema.optional(), per_1k_units_micros: microsSchema.optional() }),
  ),
});

export const openapi = [
  route({
    method: 'get', path: '/v1/prices', tag: 'Prices', guard: 'costs',
    summary: 'The price versions, and which one is in force',
    query: listQuery,
    responses: { 200: { description: 'The versions, oldest first.', content: { 'application/json': listReply } } },
  }),
  route({
    method: 'get', path: '/v1/prices/:version', tag: 'Prices', guard: 'costs',
    summary: 'One price version, every rate',
    params: versionParams,
    responses: { 200: { description: 'The version.', content: { 'application/json': priceVersion } } },
    errors: [404],
  }),
  route({
    method: 'put', path: '/v1/prices/:version', tag: 'Prices', guard: 'admin',
    summary: 'Write a price version',
    description: `A complete list of rates, or \`extends\` an existing version and lists only what changes (resolved now: versions never inherit later). Takes effect at \`effective_from\`, at least a minute ahead, on every service; a version in effect already cannot change. Rates are ${MICROS_NOTE.toLowerCase()}`,
    params: versionParams,
    body: { content: { 'application/json': priceVersionInputSchema } },
    responses: {
      200: { description: 'Replaced (not yet in effect).', content: { 'application/json': priceVersion } },
      201: { description: 'Created.', content: { 'application/json': priceVersion } },
    },
    errors: [404, 409],
  }),
  route({
    method: 'delete', path: '/v1/prices/:version', tag: 'Prices', guard: 'admin',
    summary: 'Remove a price version written through the API, before it takes effect',
    params: versionParams,
    responses: { 204: { description: 'Removed.' } },
    errors: [404, 409],
  }),
  route({
    method: 'get', path: '/v1/usage/operations', tag: 'Usage', guard: 'usage',
    summary: 'The external operations a usage key may hold and report, with their rates in force',
    responses: { 200: { description: 'The operations.', content: { 'application/json': operationsReply } } },
  }),
];

/** Store errors carry messages written for the operator; the 4xx they map to. */
function asApiError(err: unknown): unknown {
  if (!(err instanceof TollgateError) || err instanceof ApiError) return err;
  const code = err.code === 'invalid_price_table' ? 'invalid_request' : err.code;
  return ['invalid_request', 'not_found', 'conflict'].includes(code) ? new ApiError(code, err.message) : err;
}

/**
 * The versioned price table: read by any key with `costs` (prices are what the ledger charges),
 * extended by admins. A version written here is complete and takes effect at its date, no sooner
 * than the store's lead time, on every gateway and ledger.
 */
export function priceRoutes(guards: Pick<Guards, 'costs' | 'admin' | 'usage'>, live: LivePriceTable): Router {
  const router = Router();
  const sourceOf = (id: string) => (SEED_PRICE_TABLE.versions.some((v) => v.version === id) ? 'seed' : live.base.versions.some((v) => v.version === id) ? 'file' : 'api');

  router.get('/v1/prices', ...guards.costs, async (req, res) => {
    const at = listQuery.parse(req.query).at;
    const inForce = selectPriceVersion(live.table, at ? toUtcDate(at) : new Date());
    res.json({
      in_force: inForce.version,
      versions: live.table.versions.map((v) => ({ version: v.version, effective_from: v.effective_from, source: sourceOf(v.version), prices: Object.keys(v.models).length })),
    } satisfies z.input<typeof listReply>);
  });

  router.get('/v1/prices/:version', ...guards.costs, async (req, res) => {
    const id = versionId.parse(req.params.version);
    const v = live.table.versions.find((x) => x.version === id);
    if (!v) throw new ApiError('not_found', `No price version ${id}.`);
    res.json({ ...v, source: sourceOf(id) } satisfies z.input<typeof priceVersion>);
  });

  router.put('/v1/prices/:version', ...guards.admin, async (req, res) => {
    const id = versionId.parse(req.params.version);
    const input = priceVersionInputSchema.parse(req.body ?? {});
    try {
      const { version, created } = await live.store.put(id, input, live.base);
      await live.refresh();
      res.status(created ? 201 : 200).json({ ...version, source: 'api' } satisfies z.input<typeof priceVersion>);
    } catch (err) {
      throw asApiError(err);
    }
  });

  router.delete('/v1/prices/:version', ...guards.admin, async (req, res) => {
    const id = versionId.parse(req.params.version);
    try {
      if (!(await live.store.remove(id))) throw new ApiError('not_found', `No price version ${id} was written through the API.`);
      await live.refresh();
      res.status(204).end();
    } catch (err) {
      throw asApiError(err);
    }
  });

  // What a `usage` key may hold and report: the external operations in force now and their rates.
  router.get('/v1/usage/operations', ...guards.usage(false), async (_req, res) => {
    const v = selectPriceVersion(live.table, new Date());
    const operations = Object.entries(v.models)
      .filter(([, p]) => isExternal(p))
      .map(([operation, p]) => ({ operation, ...(p.per_call !== undefined && { per_call_micros: p.per_call }), ...(p.per_unit !== undefined && { per_unit_micros: p.per_unit }), ...(p.per_1k_units !== undefined && { per_1k_units_micros: p.per_1k_units }) }));
    res.json({ price_version: v.version, operations } satisfies z.input<typeof operationsReply>);
  });

  return router;
}
