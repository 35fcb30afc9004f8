import express, { type Express } from 'express';
import helmet from 'helmet';
import type Redis from 'ioredis';
import type { EventBus, PriceTable } from '@tollgate/shared';
import { reportRefusals } from './refusals';
import { type AnalyticsRouteOptions, analyticsRoutes } from './routes/analytics';
import type { ApiKeyStore } from './auth/api-keys';
import { admission } from './auth/admission';
import { authenticate } from './auth/middleware';
import type { ChatDispatcher } from './chat-dispatch';
import { ApiError, errorHandler } from './errors';
import type { GatewayMetrics } from './metrics';
import { requestId } from './request-id';
import { adminRoutes } from './routes/admin';
import { chatRoutes } from './routes/chat';
import { type CostRouteOptions, costRoutes } from './routes/costs';
import { healthRoutes } from './routes/health';
import { openAiRoutes } from './routes/openai-compat';
import { alertRoutes } from './routes/alerts';
import { budgetRoutes } from './routes/budgets';
import { AlertStore, BudgetStore, WebhookTargets } from '@tollgate/shared';
import { type VisionRouteOptions, visionRoutes } from './routes/vision';
import { dashboardRoutes } from './routes/dashboard';
import { type OpsRouteDeps, opsRoutes } from './routes/ops';
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
  /** `POST /v1/vision`; absent in setups that exercise other paths only. */
  vision?: VisionRouteOptions;
  /** The cost API (`/v1/costs/...`); absent in setups that exercise other paths only. */
  costs?: CostRouteOptions;
  /** Operator status and the live event stream (`/v1/ops/status`, `/v1/events/stream`). */
  ops?: Omit<OpsRouteDeps, 'redis' | 'namespace' | 'metrics'>;
  /** Publishes `request.refused` for turned-away paid work; absent in setups without a bus. */
  events?: EventBus;
  /** The analytics API (`/v1/analytics/...`). */
  analytics?: AnalyticsRouteOptions;
}

/** The HTTP API: every body validated at the door, every error in one shape. */
export function createApp(deps: GatewayDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(helmet());
  app.use(requestId);
  app.use(deps.metrics.middleware);

  const admit = { redis: deps.redis, namespace: deps.namespace, keys: deps.keys, adminToken: deps.adminToken, perMinute: deps.rateLimitPerMinute };
  const guards: Guards = {
    chat: [admission(admit, 'chat', { budget: true })],
    vision: [admission(admit, 'vision', { budget: true })],
    costs: [admission(admit, 'costs', { budget: false })],
    admin: [authenticate(deps.keys, deps.adminToken, 'admin')],
  };
  // Ahead of the global JSON parser: vision reads its own bodies (images far above maxBodyBytes), after authentication.
  if (deps.vision) app.use(visionRoutes(guards, deps.vision, deps.priceTable));
  app.use(express.json({ limit: deps.maxBodyBytes }));

  app.use(healthRoutes(deps.redis, deps.metrics.registry));
  app.use(dashboardRoutes());
  if (deps.ops) app.use(opsRoutes(guards.admin, { redis: deps.redis, namespace: deps.namespace, metrics: deps.metrics, ...deps.ops }));
  app.use(chatRoutes(guards, deps.dispatcher, deps.priceTable));
  app.use(openAiRoutes(guards, deps.dispatcher, deps.priceTable));
  app.use(adminRoutes(guards, deps.keys));
  if (deps.costs) app.use(costRoutes(guards, deps.costs));
  app.use(budgetRoutes(guards, new BudgetStore(deps.redis, deps.namespace)));
  app.use(
    alertRoutes(
      { read: guards.costs, admin: guards.admin },
      { redis: deps.redis, namespace: deps.namespace, alerts: new AlertStore(deps.redis, deps.namespace), webhooks: new WebhookTargets(deps.redis, deps.namespace) },
    ),
  );
  if (deps.analytics) app.use(analyticsRoutes(guards, deps.analytics));
  app.use((req, _res, next) => next(new ApiError('not_found', `No endpoint ${req.method} ${req.path}.`)));
  if (deps.events) app.use(reportRefusals(deps.events));
  app.use(errorHandler);
  return app;
}
