import express, { type Express } from 'express';
import helmet from 'helmet';
import type Redis from 'ioredis';
import { type ApiKeyStore, type CacheSettingsStore, DEFAULT_CHAT_CHAIN, type EventBus, type LivePriceTable, type PriceTable, type ResponseCache, type Target } from '@tollgate/shared';
import { AnswerCache } from './answer-cache';
import { reportRefusals } from './refusals';
import { type AnalyticsRouteOptions, analyticsRoutes } from './routes/analytics';
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
import { cacheRoutes } from './routes/cache';
import { AlertStore, BudgetStore, ExposureLog, JourneyStore, WebhookTargets } from '@tollgate/shared';
import { type VisionRouteOptions, visionRoutes } from './routes/vision';
import { dashboardRoutes } from './routes/dashboard';
import { docsRoutes } from './routes/docs';
import { type OpsRouteDeps, opsRoutes } from './routes/ops';
import type { Guards } from './routes/guards';
import { DEFAULT_MAX_OUTPUT_TOKENS, type SpendOptions, visionWork } from './spend';
import { type FlagRouteDeps, flagRoutes } from './routes/flags';
import { journeyRoutes } from './routes/journeys';
import { usageRoutes } from './routes/usage';
import { priceRoutes } from './routes/prices';

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
  /** The request deadline, which bounds how long a dead request's budget hold lasts. */
  requestDeadlineMs?: number;
  /** How long past the deadline a dead request's hold lasts. */
  holdMarginMs?: number;
  /** The chat chain the worst case is priced over (the workers call exactly what the job names). */
  chatFallbackChain?: readonly Target[];
  /** Output cap sent to the provider when a client sets none (per model, else the default). */
  defaultMaxOutputTokens?: number;
  maxOutputTokensByModel?: Readonly<Record<string, number>>;
  /** `POST /v1/vision`; absent in setups that exercise other paths only. */
  vision?: VisionRouteOptions;
  /** The cost API (`/v1/costs/...`); absent in setups that exercise other paths only. */
  costs?: CostRouteOptions;
  /** Operator status and the live event stream (`/v1/ops/status`, `/v1/events/stream`). */
  ops?: Omit<OpsRouteDeps, 'redis' | 'namespace' | 'metrics'>;
  /** The caching service: chat answers served by the gateway, stats, settings, purge. Absent: every request BYPASSes. */
  cache?: { cache: ResponseCache; settings: CacheSettingsStore; bus: EventBus };
  /** The flags admin API (`/v1/flags/...`). */
  flags?: FlagRouteDeps;
  /** Publishes `request.refused` for turned-away paid work; absent in setups without a bus. */
  events?: EventBus;
  /** The analytics API (`/v1/analytics/...`). */
  analytics?: AnalyticsRouteOptions;
  /** The price API (`/v1/prices`); `priceTable` should then be its live table. */
  prices?: LivePriceTable;
  /** External usage (`/v1/usage`, holds): needs the bus its usage events go to. */
  usage?: { bus: EventBus };
}

/** The HTTP API: every body validated at the door, every error in one shape. */
export function createApp(deps: GatewayDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(helmet());
  app.use(requestId);
  app.use(deps.metrics.middleware);

  const admit = {
    redis: deps.redis,
    namespace: deps.namespace,
    keys: deps.keys,
    adminToken: deps.adminToken,
    perMinute: deps.rateLimitPerMinute,
    deadlineMs: deps.requestDeadlineMs,
    ...(deps.holdMarginMs !== undefined && { holdMarginMs: deps.holdMarginMs }),
    onHoldsExpired: (n: number) => deps.metrics.holdsExpired.inc(n),
  };
  const spend: SpendOptions = {
    priceTable: deps.priceTable,
    fallbackChain: deps.chatFallbackChain ?? DEFAULT_CHAT_CHAIN,
    defaultMaxOutputTokens: deps.defaultMaxOutputTokens ?? DEFAULT_MAX_OUTPUT_TOKENS,
    ...(deps.maxOutputTokensByModel && { maxOutputTokensByModel: deps.maxOutputTokensByModel }),
  };
  const guards: Guards = {
    chat: (estimate) => [admission(admit, 'chat', { budget: estimate })],
    vision: [admission(admit, 'vision', { budget: () => visionWork(deps.priceTable) })],
    costs: [admission(admit, 'costs', { budget: false })],
    usage: (estimate) => [admission(admit, 'usage', { budget: estimate })],
    admin: [authenticate(deps.keys, deps.adminToken, 'admin')],
  };
  // Ahead of the global JSON parser: vision reads its own bodies (images far above maxBodyBytes), after authentication.
  if (deps.vision) app.use(visionRoutes(guards, { ...deps.vision, ...(deps.cache && { cache: { ...deps.cache, namespace: deps.namespace } }) }, deps.priceTable));
  app.use(express.json({ limit: deps.maxBodyBytes }));

  app.use(healthRoutes(deps.redis, deps.metrics.registry));
  app.use(dashboardRoutes());
  app.use(docsRoutes());
  if (deps.ops) app.use(opsRoutes(guards.admin, { redis: deps.redis, namespace: deps.namespace, metrics: deps.metrics, ...deps.ops }));
  const answers = deps.cache && new AnswerCache({ ...deps.cache, priceTable: deps.priceTable, namespace: deps.namespace });
  const chatFlags = deps.flags && { reader: deps.flags.snapshot, exposures: new ExposureLog(deps.redis, deps.namespace, deps.flags.bus) };
  app.use(chatRoutes(guards, deps.dispatcher, spend, answers, chatFlags));
  app.use(openAiRoutes(guards, deps.dispatcher, spend, answers, chatFlags));
  if (deps.cache) app.use(cacheRoutes(guards, deps.cache.cache, deps.cache.settings));
  app.use(adminRoutes(guards, deps.keys));
  if (deps.flags) app.use(flagRoutes(guards, deps.flags));
  if (deps.costs) app.use(costRoutes(guards, deps.costs));
  app.use(budgetRoutes(guards, new BudgetStore(deps.redis, deps.namespace)));
  app.use(
    alertRoutes(
      { read: guards.costs, admin: guards.admin },
      { redis: deps.redis, namespace: deps.namespace, alerts: new AlertStore(deps.redis, deps.namespace), webhooks: new WebhookTargets(deps.redis, deps.namespace) },
    ),
  );
  if (deps.analytics) app.use(analyticsRoutes(guards, deps.analytics));
  app.use(journeyRoutes({ use: [admission(admit, 'chat', { budget: false })], admin: guards.admin }, new JourneyStore(deps.redis, deps.namespace, 'gateway')));
  if (deps.prices) app.use(priceRoutes(guards, deps.prices));
  if (deps.usage) app.use(usageRoutes(guards, { redis: deps.redis, namespace: deps.namespace, bus: deps.usage.bus, priceTable: deps.priceTable }));
  app.use((req, _res, next) => next(new ApiError('not_found', `No endpoint ${req.method} ${req.path}.`)));
  if (deps.events) app.use(reportRefusals(deps.events));
  app.use(errorHandler);
  return app;
}
