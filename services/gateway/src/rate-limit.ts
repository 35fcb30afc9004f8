import type { RequestHandler } from 'express';
import type Redis from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { ApiError } from './errors';
import { principalOf } from './auth/middleware';

/** Requests per API key per minute, counted in Redis so every gateway instance shares one limit. */
export function rateLimitPerKey(redis: Redis, namespace: string, perMinute: number): RequestHandler {
  const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${namespace}:rl`, points: perMinute, duration: 60 });
  return async (_req, res, next) => {
    const principal = principalOf(res);
    try {
      const r = await limiter.consume(principal.key_id);
      res.setHeader('x-ratelimit-limit', String(perMinute));
      res.setHeader('x-ratelimit-remaining', String(r.remainingPoints));
      next();
    } catch (err) {
      if (err instanceof RateLimiterRes) {
        next(new ApiError('rate_limited', `Rate limit of ${perMinute} requests per minute reached for this API key.`, { retry_after_ms: err.msBeforeNext }));
      } else {
        next(err);
      }
    }
  };
}
