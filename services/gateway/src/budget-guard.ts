import type { RequestHandler } from 'express';
import type Redis from 'ioredis';
import { BudgetExceededError, findBudgetBlock } from '@tollgate/shared';
import { principalOf } from './auth/middleware';

/** Re-exported for routes that degrade (cheaper model, lower image quality) near a hard budget instead of refusing. */
export { nearHardBudget } from '@tollgate/shared';

/**
 * Refuses paid work while a hard budget of the caller's user, project or the global scope is used
 * up: 402 `budget_exceeded` before anything is enqueued, so a refused request is never billed.
 * One MGET per request; the alerting service sets the blocks, and they expire at the period's end.
 * Goes after authentication (it needs the principal).
 */
export function budgetGuard(redis: Redis, namespace: string): RequestHandler {
  return async (_req, res, next) => {
    try {
      const who = principalOf(res);
      const block = await findBudgetBlock(redis, namespace, who);
      if (!block) return next();
      next(
        new BudgetExceededError(block.scope, block.scope_id, block.period, {
          ...(block.spent_micros !== undefined && { spent_micros: block.spent_micros }),
          ...(block.limit_micros !== undefined && { limit_micros: block.limit_micros }),
        }),
      );
    } catch (err) {
      next(err);
    }
  };
}
