import type { ErrorRequestHandler } from 'express';
import { classify, type EventBus } from '@tollgate/shared';
import type { Principal } from './auth/middleware';

/** Routes that start paid work: a refusal there is a request analytics counts. */
const PAID_ROUTES: Record<string, 'chat' | 'vision' | 'external'> = {
  '/v1/chat': 'chat',
  '/v1/chat/completions': 'chat',
  '/v1/vision': 'vision',
  // A hold for an external call: no workflow of ours, so the event names only the route.
  '/v1/usage/holds': 'external',
};

export interface RefusalLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

/**
 * Publishes `request.refused` for paid work the gateway turned away (rate limit, hard budget), so
 * analytics counts requests that never reached a worker. Off the response's path: the error goes
 * on to the error handler at once and a failed publish is only logged.
 */
export function reportRefusals(bus: EventBus, logger?: RefusalLogger): ErrorRequestHandler {
  return (err, req, res, next) => {
    const workflow = PAID_ROUTES[req.path];
    if (workflow && req.method === 'POST') {
      const { code } = classify(err);
      const reason = code === 'rate_limited' ? 'rate_limited' : code === 'budget_exceeded' ? 'budget_exceeded' : undefined;
      const who = res.locals.principal as Principal | undefined;
      if (reason) {
        const streamed = (req.body as { stream?: unknown } | undefined)?.stream === true;
        bus
          .publish(
            'request.refused',
            { route: req.path, reason, code, ...(workflow !== 'external' && { workflow, streamed }) },
            {
              correlation_id: String(res.locals.requestId ?? 'unknown'),
              ...(who && { user_id: who.user_id, project_id: who.project_id }),
            },
          )
          .catch((e: unknown) => logger?.warn('request.refused not published', { error: (e as Error).message }));
      }
    }
    next(err);
  };
}
