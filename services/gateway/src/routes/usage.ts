import { randomUUID } from 'node:crypto';
import { Router, type Request, type Response } from 'express';
import type Redis from 'ioredis';
import {
  type EventBus,
  externalPrice,
  externalWorstCase,
  finishHold,
  formatUsd,
  type ModelPrice,
  price,
  type PriceTable,
  splitOperation,
  TollgateError,
} from '@tollgate/shared';
import { z } from 'zod';
import { holdOf, journeyOf, type PaidWork } from '../auth/admission';
import { principalOf, type Principal } from '../auth/middleware';
import { ApiError } from '../errors';
import { microsSchema, route } from '../openapi/registry';
import { costSchema } from '../openapi/schemas';
import { type Claim, type HoldRecord, IDEMPOTENCY_TTL_MS, PENDING_STALE_MS, reportFingerprint, UsageHoldStore } from '../usage-holds';
import type { Guards } from './guards';

/** Usage events of external operations carry this service name, beside chat-workflow, vision and gateway. */
export const EXTERNAL_SERVICE = 'external';
export const DEFAULT_HOLD_TTL_SECONDS = 300;
export const MAX_HOLD_TTL_SECONDS = 3_600;

const operation = z.string().min(1).max(128);
const units = z.int().min(0).max(1_000_000_000);
const calls = z.int().min(1).max(1_000_000).default(1);

const holdBody = z.strictObject({
  operation,
  /** The most units the call may use: its worst case. */
  units,
  calls,
  ttl_seconds: z.int().min(1).max(MAX_HOLD_TTL_SECONDS).default(DEFAULT_HOLD_TTL_SECONDS),
});
const reportBody = z.strictObject({ operation, units, calls, hold_id: z.uuid().optional() });
const holdParams = z.object({ id: z.uuid() });
const idempotencyKey = z.string().min(1).max(255).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces');
const reportHeaders = z.object({
  'idempotency-key': idempotencyKey.optional().meta({ description: 'Without `hold_id`: a retry with the same key and body gets the first answer, and records nothing again.' }),
});

const holdReply = z
  .object({
    hold_id: z.uuid().meta({ description: 'Name it in the report (`hold_id`) or release it (DELETE).' }),
    operation: z.string(),
    units: z.number().int(),
    calls: z.number().int(),
    worst_micros: microsSchema.meta({ description: 'The worst case held on every hard budget covering the caller.' }),
    worst_usd: z.string(),
    held: z.boolean().meta({ description: 'false when no hard budget covers the caller: nothing was reserved, but the id still names the call.' }),
    expires_at: z.string().meta({ description: 'When an unreported hold is given back by itself.' }),
    price_version: z.string(),
  })
  .meta({ id: 'UsageHold' });
const reportReply = z
  .object({
    usage_event_id: z.string().meta({ description: 'The `usage.recorded` event; the ledger prices it once.' }),
    operation: z.string(),
    units: z.number().int(),
    calls: z.number().int(),
    cost: costSchema.meta({ description: "At the price in force now; the ledger's entry is the record." }),
    hold_id: z.uuid().optional(),
    hold: z.enum(['none', 'expired', 'settling']).optional().meta({ description: 'With `hold_id`: `settling` (the ledger settles it with this call), `expired`, or `none` (nothing was held).' }),
    worst_micros: microsSchema.optional().meta({ description: 'With `hold_id`: what the hold reserved.' }),
  })
  .meta({ id: 'UsageReport' });

export const openapi = [
  route({
    method: 'post', path: '/v1/usage/holds', tag: 'Usage', guard: 'usage', held: true,
    summary: "Hold an external call's worst case on the caller's hard budgets",
    description: 'Prices `units` (and `calls`) of the operation at the rates in force and reserves that on every hard budget covering the caller, as chat admission does; 402 when one cannot hold it. Report the call (or release the hold) before `expires_at`.',
    body: { content: { 'application/json': holdBody } },
    responses: { 201: { description: 'Held (or, without a hard budget, only named).', content: { 'application/json': holdReply } } },
  }),
  route({
    method: 'post', path: '/v1/usage', tag: 'Usage', guard: 'usage',
    summary: 'Report what an external call used',
    description: 'Publishes one usage event, priced by the ledger once; with `hold_id` it settles that hold. One report per hold (or per `Idempotency-Key`): a retry of the same report gets the first answer again (`idempotent-replayed: true`), a different one 409.',
    headers: reportHeaders,
    body: { content: { 'application/json': reportBody } },
    responses: {
      202: {
        description: 'Recorded.',
        content: { 'application/json': reportReply },
        headers: z.object({ 'idempotent-replayed': z.literal('true').optional().meta({ description: 'The answer of an earlier identical report; nothing new was recorded.' }) }),
      },
    },
    errors: [404, 409],
  }),
  route({
    method: 'delete', path: '/v1/usage/holds/:id', tag: 'Usage', guard: 'usage',
    summary: 'Release a hold: the call was not made',
    params: holdParams,
    responses: { 204: { description: 'Released (again, for a hold released already).' } },
    errors: [404, 409],
  }),
];

export interface UsageRouteOptions {
  redis: Redis;
  namespace: string;
  bus: EventBus;
  priceTable: PriceTable;
}

function priceOf(table: PriceTable, op: string, at = new Date()): { price: ModelPrice; version: string } {
  const p = externalPrice(table, op, at);
  if (!p) {
    throw new ApiError('unknown_operation', `Unknown operation "${op}": the price table has no external operation of that name. Ask an administrator to price it (PUT /v1/prices/...).`, {
      operation: op,
    });
  }
  return p;
}

const sameTenant = (who: Principal, rec: HoldRecord) => who.user_id === rec.user_id && who.project_id === rec.project_id;

async function ownHold(store: UsageHoldStore, who: Principal, holdId: string): Promise<HoldRecord> {
  const rec = await store.get(holdId);
  if (!rec) throw new ApiError('not_found', `No usage hold ${holdId}.`);
  if (!sameTenant(who, rec)) throw new ApiError('forbidden', `Usage hold ${holdId} belongs to another user or project.`);
  return rec;
}

/**
 * Metered external APIs: ask first (`POST /v1/usage/holds` reserves the worst case on the
 * caller's hard budgets exactly as chat admission does), then report what the call used
 * (`POST /v1/usage`: one usage event, priced and settled by the ledger once), or give the hold
 * back (`DELETE /v1/usage/holds/:id`). Scope `usage`; a key reaches its own user's and
 * project's holds only.
 */
export function usageRoutes(guards: Pick<Guards, 'usage'>, o: UsageRouteOptions): Router {
  const router = Router();
  const store = new UsageHoldStore(o.redis, o.namespace);

  // Runs inside admission, before the key is checked; its errors are reported after the key checks.
  const estimate = (req: Request, res: Response): PaidWork => {
    const body = holdBody.parse(req.body ?? {});
    const p = priceOf(o.priceTable, body.operation);
    const worst = externalWorstCase(p.price, { calls: body.calls, quantity: body.units });
    if (!Number.isSafeInteger(worst)) throw new ApiError('invalid_request', 'The worst case of that many units is beyond any budget.');
    res.locals.usageHold = { body, version: p.version, pricedAt: Date.now() };
    return { input_tokens: 0, bounds: [{ input_per_mtok: 0, fixed_micros: worst }], hold_ttl_ms: body.ttl_seconds * 1000 };
  };

  router.post('/v1/usage/holds', ...guards.usage(estimate), async (_req, res) => {
    const who = principalOf(res);
    const hold = holdOf(res)!;
    const { body, version, pricedAt } = res.locals.usageHold as { body: z.infer<typeof holdBody>; version: string; pricedAt: number };
    // Without a hard budget nothing is reserved, but the id still names the call for its report.
    const id = hold.hold_id ?? randomUUID();
    const record: HoldRecord = {
      hold_id: id,
      user_id: who.user_id,
      project_id: who.project_id,
      operation: body.operation,
      calls: body.calls,
      units: body.units,
      worst_micros: hold.worst_micros,
      held: hold.hold_id !== undefined,
      expires_at: hold.expires_at,
      price_version: version,
      priced_at: pricedAt,
      ...journeyOf(res),
    };
    await store.put(record);
    // The hold now outlives this response: its report, release or expiry ends it.
    hold.handed_off = true;
    const reply: z.input<typeof holdReply> = {
      hold_id: id,
      operation: body.operation,
      units: body.units,
      calls: body.calls,
      worst_micros: hold.worst_micros,
      worst_usd: formatUsd(hold.worst_micros),
      held: record.held,
      expires_at: new Date(hold.expires_at).toISOString(),
      price_version: version,
    };
    res.status(201).json(reply);
  });

  router.post('/v1/usage', ...guards.usage(false), async (req, res) => {
    const who = principalOf(res);
    const body = reportBody.parse(req.body ?? {});
    const rawKey = req.header('idempotency-key');
    const idemKey = rawKey === undefined ? undefined : idempotencyKey.parse(rawKey);
    const rec = body.hold_id ? await ownHold(store, who, body.hold_id) : undefined;
    if (rec && rec.operation !== body.operation) {
      throw new ApiError('invalid_request', `Usage hold ${rec.hold_id} is for "${rec.operation}", not "${body.operation}".`);
    }
    // A held call is priced as it was held, even if a price version took effect since (or dropped
    // the operation): what was reserved is what the same units cost.
    const pricedAt = rec?.priced_at !== undefined ? new Date(rec.priced_at) : new Date();
    priceOf(o.priceTable, body.operation, pricedAt);
    const { provider, model } = splitOperation(body.operation);
    const usageUnits = { calls: body.calls, quantity: body.units };
    let estimate;
    try {
      estimate = price({ provider, model, units: usageUnits }, { at: pricedAt, table: o.priceTable });
    } catch (err) {
      throw err instanceof TollgateError ? new ApiError('invalid_request', `That report cannot be priced: ${err.message}`) : err;
    }

    // One report per hold, or per Idempotency-Key: a retry gets the first answer again.
    const slot = rec
      ? store.slotFor({ hold_id: rec.hold_id })
      : idemKey !== undefined
        ? store.slotFor({ user_id: who.user_id, project_id: who.project_id, idempotency_key: idemKey })
        : undefined;
    const fingerprint = reportFingerprint(body);
    const ttl = rec ? Math.max(1, rec.expires_at - Date.now()) + IDEMPOTENCY_TTL_MS : IDEMPOTENCY_TTL_MS;
    let nonce: string = randomUUID();
    if (slot) {
      const prior = await store.claim(slot, { state: 'pending', fingerprint, nonce, at: Date.now() }, ttl);
      if (prior) {
        const taken = prior.state === 'pending' && prior.fingerprint === fingerprint && Date.now() - prior.at > PENDING_STALE_MS ? await store.takeOver(slot, prior, ttl) : undefined;
        if (!taken) return replay(res, prior, fingerprint, rec);
        nonce = taken.nonce;
      }
    }

    let published = false;
    try {
      const now = new Date();
      const settles = rec?.held === true;
      const expired = rec !== undefined && rec.expires_at <= now.getTime();
      // Tell the hold how many billed calls will settle it (one), before the ledger may settle it.
      if (settles) await finishHold(o.redis, o.namespace, rec.hold_id, 1);
      const requestId = String(res.locals.requestId);
      const event = await o.bus.publish(
        'usage.recorded',
        {
          provider,
          model,
          service: EXTERNAL_SERVICE,
          operation: body.operation,
          units: usageUnits,
          usage_source: 'reported',
          request_id: requestId,
          cached: false,
          ...(settles && { hold_id: rec.hold_id }),
          ...(rec?.priced_at !== undefined && { priced_at: pricedAt.toISOString() }),
        },
        {
          correlation_id: requestId,
          user_id: who.user_id,
          project_id: who.project_id,
          occurred_at: now.toISOString(),
          ...(rec?.journey !== undefined && { journey_id: rec.journey, ...(rec.journey_step !== undefined && { journey_step: rec.journey_step }) }),
          ...(slot && { id: store.eventIdFor(slot, nonce) }),
        },
      );
      published = true;
      const response: z.input<typeof reportReply> = {
        usage_event_id: event.id,
        operation: body.operation,
        units: body.units,
        calls: body.calls,
        // At the price the ledger applies (the hold's, for a held call); the ledger's entry is the record.
        cost: { micros: estimate.amount_micros, usd: formatUsd(estimate.amount_micros), price_version: estimate.price_version },
        ...(rec && { hold_id: rec.hold_id, hold: !rec.held ? 'none' : expired ? 'expired' : 'settling', worst_micros: rec.worst_micros }),
      };
      // Recorded either way: if marking the slot done fails, a retry finds it pending, takes it
      // over once stale and publishes the same event id again, which the ledger counts once.
      if (slot) await store.complete(slot, { state: 'done', fingerprint, response }, ttl).catch(() => undefined);
      res.status(202).json(response);
    } catch (err) {
      // Nothing was recorded, so a retry must be free to record it. Once published, the claim
      // stays: giving it back would let a release free the hold, or a report without it count twice.
      if (slot && !published) await store.unclaim(slot).catch(() => undefined);
      throw err;
    }
  });

  router.delete('/v1/usage/holds/:id', ...guards.usage(false), async (req, res) => {
    const { id } = holdParams.parse(req.params);
    const rec = await ownHold(store, principalOf(res), id);
    const prior = await store.claim(store.slotFor({ hold_id: id }), { state: 'released' }, Math.max(1, rec.expires_at - Date.now()) + IDEMPOTENCY_TTL_MS);
    if (prior && prior.state !== 'released') throw new ApiError('conflict', `Usage hold ${id} was settled by a report; there is nothing to release.`);
    if (rec.held) await finishHold(o.redis, o.namespace, id, 0);
    res.status(204).end();
  });

  return router;
}

function replay(res: Response, prior: Claim, fingerprint: string, rec: HoldRecord | undefined): void {
  if (prior.state === 'released') {
    throw new ApiError('conflict', `Usage hold ${rec?.hold_id ?? ''} was released; report the call without hold_id.`);
  }
  if (prior.fingerprint !== fingerprint) {
    throw new ApiError('conflict', rec ? `Usage hold ${rec.hold_id} was already settled by a different report.` : 'This Idempotency-Key was already used for a different report.');
  }
  if (prior.state === 'pending') throw new ApiError('conflict', 'The first report with this key is still being recorded; retry shortly.');
  res.setHeader('idempotent-replayed', 'true');
  res.status(202).json(prior.response);
}
