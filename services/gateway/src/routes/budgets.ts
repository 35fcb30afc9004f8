import { Router } from 'express';
import { type BudgetStore, budgetScopeIdSchema, budgetScopeSchema, GLOBAL_SCOPE_ID } from '@tollgate/shared';
import { z } from 'zod';
import { ApiError } from '../errors';
import type { Guards } from './guards';

const target = z
  .object({ scope: budgetScopeSchema, scopeId: budgetScopeIdSchema })
  .refine((p) => p.scope !== 'global' || p.scopeId === GLOBAL_SCOPE_ID, {
    message: `the global budget's id is "${GLOBAL_SCOPE_ID}"`,
    path: ['scopeId'],
  });

/**
 * Budgets per user and project (and an override of the configured global defaults), admin only.
 * A PUT replaces the scope's budget; raising a hard budget lifts its block before the answer.
 */
export function budgetRoutes(guards: Pick<Guards, 'admin'>, store: BudgetStore): Router {
  const router = Router();

  router.get('/v1/budgets', ...guards.admin, async (_req, res) => {
    const [budgets, defaults] = await Promise.all([store.list(), store.defaults()]);
    res.json({ budgets, global_defaults: defaults ?? [] });
  });

  router.get('/v1/budgets/:scope/:scopeId', ...guards.admin, async (req, res) => {
    const { scope, scopeId } = target.parse(req.params);
    const budget = await store.get(scope, scopeId);
    if (!budget && scope !== 'global') throw new ApiError('not_found', `No budget is set for ${scope} ${scopeId}.`);
    res.json({ scope, scope_id: scopeId, budget, status: await store.status(scope, scopeId) });
  });

  router.put('/v1/budgets/:scope/:scopeId', ...guards.admin, async (req, res) => {
    const { scope, scopeId } = target.parse(req.params);
    const { budget, created } = await store.put(scope, scopeId, req.body ?? {});
    res.status(created ? 201 : 200).json({ budget, status: await store.status(scope, scopeId) });
  });

  router.delete('/v1/budgets/:scope/:scopeId', ...guards.admin, async (req, res) => {
    const { scope, scopeId } = target.parse(req.params);
    if (!(await store.remove(scope, scopeId))) throw new ApiError('not_found', `No budget is set for ${scope} ${scopeId}.`);
    res.status(204).end();
  });

  return router;
}
