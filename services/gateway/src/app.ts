import express, { type Express } from 'express';
import helmet from 'helmet';
import type Redis from 'ioredis';
import type { PriceTable } from '@tollgate/shared';
import type { ApiKeyStore } from './auth/api-keys';
import { authenticate } from './auth/middleware';
import type { ChatDispatcher } from './chat-dispatch';
import { ApiError, errorHandler } from './errors';
import type { GatewayMetrics } from './metrics';
import { rateLimitPerKey } from './rate-limit';
import { requestId } from './request-id';
import { adminRoutes } from './routes/admin';
import { chatRoutes } from './routes/chat';
import { healthRoutes } from './routes/health';
import { openAiRoutes } from './routes/openai-compat';
import type { Guards } from './routes/guards';

export interface GatewayDeps {
  redis: Redis;
  namespace: string;
  keys: ApiKeyStore;
  dispatcher: ChatDispatcher;
  metrics: GatewayMetrics;
  priceTable: PriceTable;
  adminToken: string | undefined;
  maxBodyBytes: number;
  rateLimitPerMinute: number;
}

/** The HTTP API: every body validated at the door, every error in one shape. */
export function createApp(deps: GatewayDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(helmet());
  app.use(requestId);
  app.use(deps.metrics.middleware);
  app.use(express.json({ limit: deps.maxBodyBytes }));

  const limit = rateLimitPerKey(deps.redis, deps.namespace, deps.rateLimitPerMinute);
  const guards: Guards = {
    chat: [authenticate(deps.keys, deps.adminToken, 'chat'), limit],
    admin: [authenticate(deps.keys, deps.adminToken, 'admin')],
  };

  app.use(healthRoutes(deps.redis, deps.metrics.registry));
  app.use(chatRoutes(guards, deps.dispatcher, deps.priceTable));
  app.use(openAiRoutes(guards, deps.dispatcher, deps.priceTable));
  app.use(adminRoutes(guards, deps.keys));
  app.use((req, _res, next) => next(new ApiError('not_found', `No endpoint ${req.method} ${req.path}.`)));
  app.use(errorHandler);
  return app;
}
