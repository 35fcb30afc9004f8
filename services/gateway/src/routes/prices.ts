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
import type { Guards } from './guards';

const versionId = z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'version ids are 1-64 characters of A-Z a-z 0-9 . _ : -');

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
    const at = z.object({ at: z.iso.datetime().optional() }).parse(req.query).at;
    const inForce = selectPriceVersion(live.table, at ? toUtcDate(at) : new Date());
    res.json({
      in_force: inForce.version,
      versions: live.table.versions.map((v) => ({ version: v.version, effective_from: v.effective_from, source: sourceOf(v.version), prices: Object.keys(v.models).length })),
    });
  });

  router.get('/v1/prices/:version', ...guards.costs, async (req, res) => {
    const id = versionId.parse(req.params.version);
    const v = live.table.versions.find((x) => x.version === id);
    if (!v) throw new ApiError('not_found', `No price version ${id}.`);
    res.json({ ...v, source: sourceOf(id) });
  });

  router.put('/v1/prices/:version', ...guards.admin, async (req, res) => {
    const id = versionId.parse(req.params.version);
    const input = priceVersionInputSchema.parse(req.body ?? {});
    try {
      const { version, created } = await live.store.put(id, input, live.base);
      await live.refresh();
      res.status(created ? 201 : 200).json({ ...version, source: 'api' });
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
    res.json({ price_version: v.version, operations });
  });

  return router;
}
