import { Router } from 'express';
import { BUDGET_MODES, budgetInputSchema, type BudgetStore, budgetScopeIdSchema, budgetScopeSchema, GLOBAL_SCOPE_ID, periodBudgetSchema } from '@tollgate/shared';
import { z } from 'zod';
import { ApiError } from '../errors';
import type { Guards } from './guards';
import { microsSchema, route } from '../openapi/registry';


const budgetSchema = z
  .object({
    scope: budgetScopeSchema,
    scope_id: z.string(),
    periods: z.array(periodBudgetSchema),
    revision: z.number().int().meta({ description: 'Increases with every write.' }),
    updated_at: z.string(),
  })
  .meta({ id: 'Budget' });
const periodStatusSchema = z
  .object({
    period: z.enum(['day', 'week', 'month']),
    period_key: z.string(),
    spent_micros: microsSchema,
    reserved_micros: microsSchema.meta({ description: "Worst-case cost held for requests in flight on this scope's hard budgets." }),
    limit_micros: microsSchema.nullable(),
    mode: z.enum(BUDGET_MODES).nullable(),
    used_pct: z.number().int().nullable().meta({ description: 'Percent of the limit used, rounded down; null without a limit.' }),
    blocked: z.boolean(),
    resets_at: z.string(),
  })
  .meta({ id: 'BudgetPeriodStatus' });
const listReply = z.object({ budgets: z.array(budgetSchema), global_defaults: z.array(periodBudgetSchema).meta({ description: 'The configured global budgets (DEFAULT_BUDGETS), used while no global budget is set.' }) });
const getReply = z.object({ scope: budgetScopeSchema, scope_id: z.string(), budget: budgetSchema.nullable(), status: z.array(periodStatusSchema) }).meta({ id: 'BudgetWithStatus' });
const putReply = z.object({ budget: budgetSchema, status: z.array(periodStatusSchema) });
const targetParams = z.object({ scope: budgetScopeSchema, scopeId: budgetScopeIdSchema.meta({ description: `The user or project id; "${GLOBAL_SCOPE_ID}" for the global budget.` }) });
const target = targetParams
  .refine((p) => p.scope !== 'global' || p.scopeId === GLOBAL_SCOPE_ID, {
    message: `the global budget's id is "${GLOBAL_SCOPE_ID}"`,
    path: ['scopeId'],
  });

export const openapi = [
  route({
    method: 'get', path: '/v1/budgets', tag: 'Budgets', guard: 'admin',
    summary: 'Every budget set, and the configured global defaults',
    responses: { 200: { description: 'The budgets.', content: { 'application/json': listReply } } },
  }),
  route({
    method: 'get', path: '/v1/budgets/:scope/:scopeId', tag: 'Budgets', guard: 'admin',
    summary: "A scope's budget and its spend per period",
    params: target,
    responses: { 200: { description: 'The budget (null for a global scope on the defaults) and its status.', content: { 'application/json': getReply } } },
    errors: [404],
  }),
  route({
    method: 'put', path: '/v1/budgets/:scope/:scopeId', tag: 'Budgets', guard: 'admin',
    summary: "Set (replace) a scope's budget",
    description: 'Limits in integer micro-dollars per period; `hard` refuses new paid work at 100%, `soft` only alerts. Raising a hard budget lifts its block before the answer.',
    params: target,
    body: { content: { 'application/json': budgetInputSchema } },
    responses: {
      200: { description: 'Replaced.', content: { 'application/json': putReply } },
      201: { description: 'Created.', content: { 'application/json': putReply } },
    },
  }),
  route({
    method: 'delete', path: '/v1/budgets/:scope/:scopeId', tag: 'Budgets', guard: 'admin',
    summary: "Remove a scope's budget",
    params: target,
    responses: { 204: { description: 'Removed.' } },
    errors: [404],
  }),
];

/**
 * Budgets per user and project (and an override of the configured global defaults), admin only.
 * A PUT replaces the scope's budget; raising a hard budget lifts its block before the answer.
 */
export function budgetRoutes(guards: Pick<Guards, 'admin'>, store: BudgetStore): Router {
  const router = Router();

  router.get('/v1/budgets', ...guards.admin, async (_req, res) => {
    const [budgets, defaults] = await Promise.all([store.list(), store.defaults()]);
    const reply: z.input<typeof listReply> = { budgets, global_defaults: defaults ?? [] };
    res.json(reply);
  });

  router.get('/v1/budgets/:scope/:scopeId', ...guards.admin, async (req, res) => {
    const { scope, scopeId } = target.parse(req.params);
    const budget = await store.get(scope, scopeId);
    if (!budget && scope !== 'global') throw new ApiError('not_found', `No budget is set for ${scope} ${scopeId}.`);
    const reply: z.input<typeof getReply> = { scope, scope_id: scopeId, budget, status: await store.status(scope, scopeId) };
    res.json(reply);
  });

  router.put('/v1/budgets/:scope/:scopeId', ...guards.admin, async (req, res) => {
    const { scope, scopeId } = target.parse(req.params);
    const { budget, created } = await store.put(scope, scopeId, req.body ?? {});
    const reply: z.input<typeof putReply> = { budget, status: await store.status(scope, scopeId) };
    res.status(created ? 201 : 200).json(reply);
  });

  router.delete('/v1/budgets/:scope/:scopeId', ...guards.admin, async (req, res) => {
    const { scope, scopeId } = target.parse(req.params);
    if (!(await store.remove(scope, scopeId))) throw new ApiError('not_found', `No budget is set for ${scope} ${scopeId}.`);
    res.status(204).end();
  });

  return router;
}
