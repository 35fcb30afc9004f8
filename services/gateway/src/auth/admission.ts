import type { RequestHandler } from 'express';
import type Redis from 'ioredis';
import {
  alertingKeys,
  type ApiKeyRecord,
  type ApiKeyStore,
  type BudgetPeriod,
  BudgetExceededError,
  blockCells,
  keyspace,
  type KeyScope,
  LuaScript,
  PERIODS,
  toBudgetBlock,
} from '@tollgate/shared';
import { ApiError } from '../errors';
import ADMIT_LUA from './admit-1.lua';
import { bearer, OPERATOR, type Principal, sameSecret } from './middleware';

// Key, scope, rate limit and hard-budget blocks in one round trip (see the script's header).
const ADMIT = new LuaScript(ADMIT_LUA);

type Verdict =
  | ['unknown']
  | ['forbidden', string]
  | ['rate_limited' | 'ok', string, number, number]
  | ['blocked', string, number, number, number, string];

const WINDOW_MS = 60_000;

export interface AdmissionOptions {
  redis: Redis;
  namespace: string;
  keys: ApiKeyStore;
  adminToken: string | undefined;
  /** Requests per API key per minute, shared by every gateway instance. */
  perMinute: number;
}


/**
 * Authenticates (`Authorization: Bearer <key>` or `x-api-key`; the ADMIN_TOKEN acts as the
 * operator), checks the scope, counts the request against the key's rate limit and, with
 * `budget`, refuses paid work while a hard budget of the caller is used up (402 before anything
 * is enqueued, so a refused request is never billed). One Redis round trip for all of it.
 */
export function admission(opts: AdmissionOptions, scope: KeyScope, { budget }: { budget: boolean }): RequestHandler {
  const rateKey = `${keyspace(opts.namespace)('rl')}:`;
  const blocks = alertingKeys(opts.namespace);
  const periods = budget ? PERIODS : [];
  const template = (s: 'user' | 'project' | 'global') => blocks.block(s, '{ID}', '{PERIOD}' as BudgetPeriod);
  const tail = [periods.length, ...periods, template('user'), template('project'), template('global')];

  return async (req, res, next) => {
    try {
      const presented = bearer(req.header('authorization')) ?? req.header('x-api-key');
      if (!presented) throw new ApiError('unauthorized', 'An API key is required: send it as "Authorization: Bearer <key>".');
      const operator = opts.adminToken !== undefined && sameSecret(presented, opts.adminToken);
      if (!operator && !opts.keys.plausible(presented)) throw new ApiError('unauthorized', 'The API key is not valid or has been revoked.');
      const verdict = (await ADMIT.run(
        opts.redis,
        [opts.keys.recordKey(operator ? '' : presented)],
        [operator ? JSON.stringify(OPERATOR) : '', scope, rateKey, WINDOW_MS, opts.perMinute, ...tail],
      )) as Verdict;

      if (verdict[0] === 'unknown') throw new ApiError('unauthorized', 'The API key is not valid or has been revoked.');
      if (verdict[0] === 'forbidden') throw new ApiError('forbidden', `This API key lacks the "${scope}" scope.`);
      const record = JSON.parse(verdict[1]) as ApiKeyRecord;
      const { created_at: _created, ...rest } = record;
      const principal: Principal = { ...rest, operator };
      res.locals.principal = principal;
      // For long-lived responses (SSE): the key is checked again before more data goes out.
      if (!operator) res.locals.recheckKey = async () => (await opts.keys.verify(presented)) !== null;
      const [, , count, ttl] = verdict;
      res.setHeader('x-ratelimit-limit', String(opts.perMinute));
      res.setHeader('x-ratelimit-remaining', String(Math.max(0, opts.perMinute - count)));
      if (verdict[0] === 'rate_limited') {
        throw new ApiError('rate_limited', `Rate limit of ${opts.perMinute} requests per minute reached for this API key.`, { retry_after_ms: ttl });
      }
      if (verdict[0] === 'blocked') {
        const block = toBudgetBlock(blockCells(principal)[verdict[4]]!, verdict[5]);
        throw new BudgetExceededError(block.scope, block.scope_id, block.period, {
          ...(block.spent_micros !== undefined && { spent_micros: block.spent_micros }),
          ...(block.limit_micros !== undefined && { limit_micros: block.limit_micros }),
        });
      }
      next();
    } catch (err) {
      next(err);
    }
  };
}
