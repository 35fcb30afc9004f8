import { Router } from 'express';
import {
  type AnalyticsReader,
  DIMENSIONS,
  type Dimension,
  type FunnelReader,
  GRANULARITIES,
  OVERVIEW_PERIODS,
  METRICS,
  queryError,
} from '@tollgate/shared';
import { z } from 'zod';
import { type Principal, principalOf } from '../auth/middleware';
import { ApiError } from '../errors';
import type { Guards } from './guards';
import { route } from '../openapi/registry';

export interface AnalyticsRouteOptions {
  reader: AnalyticsReader;
  funnels: FunnelReader;
  now?: () => number;
}

const value = z.string().min(1).max(128);
const values = z.union([value, z.array(value).min(1).max(50)]).transform((v) => (Array.isArray(v) ? v : [v]));
const filtersSchema = z
  .strictObject(Object.fromEntries(DIMENSIONS.map((d) => [d, values.optional()])) as Record<Dimension, z.ZodOptional<typeof values>>)
  .default({} as never);

const RELATIVE = /^-(\d{1,6})(m|h|d)$/;
const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** A UTC date, an ISO date-time with its zone, epoch ms, or relative to now (-15m, -24h, -7d). */
const instant = (now: () => number) =>
  z.union([z.string(), z.number().int().positive()]).transform((s, ctx) => {
    if (typeof s === 'number') return s;
    const rel = RELATIVE.exec(s);
    if (rel) return now() - Number(rel[1]) * UNIT_MS[rel[2] as keyof typeof UNIT_MS];
    if (/^\d{4}-\d{2}-\d{2}$/.test(s) || /^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})$/.test(s)) {
      const t = Date.parse(s);
      if (!Number.isNaN(t)) return t;
    }
    ctx.addIssue({ code: 'custom', message: 'a date (YYYY-MM-DD), an ISO date-time with a zone, epoch ms, or -15m / -24h / -7d' });
    return z.NEVER;
  });

const DURATION = /^(\d{1,6})(s|m|h|d)$/;
/** A conversion window: milliseconds or 30s / 15m / 2h / 7d, at most 31 days. */
const duration = z
  .union([z.number().int().min(1_000), z.string().regex(DURATION, 'milliseconds, or like 30s, 15m, 2h, 7d')])
  .transform((v) => (typeof v === 'number' ? v : Number(DURATION.exec(v)![1]) * { s: 1_000, ...UNIT_MS }[DURATION.exec(v)![2] as 's' | 'm' | 'h' | 'd']))
  .refine((ms) => ms >= 1_000 && ms <= 31 * 86_400_000, 'between 1 second and 31 days');

const isAdmin = (p: Principal) => p.scopes.includes('admin');

/**
 * Whose analytics a request may see: an admin anyone's, any other key its own user or its own
 * project (a filter on anything else is refused, not silently narrowed).
 */
function scoped(p: Principal, filters: Partial<Record<Dimension, string[]>>): Partial<Record<Dimension, string[]>> {
  if (isAdmin(p)) return filters;
  const { user, project } = filters;
  if (user && user.some((u) => u !== p.user_id)) throw new ApiError('forbidden', "This key may only read its own user's analytics.");
  if (project && project.some((x) => x !== p.project_id)) throw new ApiError('forbidden', "This key may only read its own project's analytics.");
  return project && !user ? { ...filters, project: [p.project_id] } : { ...filters, user: [p.user_id] };
}

/** The bodies and queries, built per clock: relative instants (`-15m`) are read against it. */
export function analyticsSchemas(now: () => number) {
  const querySchema = z.strictObject({
    metrics: z.array(z.enum(METRICS)).min(1).max(METRICS.length),
    group_by: z.array(z.enum(DIMENSIONS)).max(3).default([]),
    filters: filtersSchema,
    from: instant(now),
    to: instant(now).optional(),
    granularity: z.enum(GRANULARITIES).default('auto'),
    limit: z.number().int().min(1).max(1_000).default(100),
    cursor: z.string().regex(/^\d{1,9}$/, 'the next_cursor of the previous page').optional(),
  });
  const overviewSchema = z.strictObject({
    period: z.enum(OVERVIEW_PERIODS).default('day'),
    user: value.optional(),
    project: value.optional(),
  });
  const funnelSchema = z.strictObject({
    steps: z.array(z.strictObject({ event: z.string().regex(/^[a-z*][a-z0-9_.*]{0,63}$/, 'an event type or pattern, e.g. workflow.completed or journey.*'), where: z.record(z.string().max(64), z.string().max(128)).optional() })).min(2).max(10),
    window: duration.default(86_400_000),
    from: instant(now),
    to: instant(now).optional(),
    by: z.enum(['user', 'request']).default('user'),
    filters: z.strictObject({ user: values.optional(), project: values.optional() }).default({}),
  });
  return { querySchema, overviewSchema, funnelSchema };
}

const metricValue = z.union([z.number(), z.null(), z.record(z.string(), z.number())]);
const metricValues = z.partialRecord(z.enum(METRICS), metricValue).meta({
  description: 'Metric name to value; `*_micros` metrics are integer micro-dollars, latencies milliseconds, rates 0-1, `errors_by_category` counts per category.',
});
const queryReply = z.object({
  granularity: z.enum(GRANULARITIES).exclude(['auto']),
  from: z.string(),
  to: z.string(),
  buckets: z.array(z.string()),
  groups: z.array(z.object({ key: z.partialRecord(z.enum(DIMENSIONS), z.string().nullable()), totals: metricValues, series: z.array(z.looseObject({ t: z.string() })) })),
  total_groups: z.number().int(),
  next_cursor: z.string().nullable(),
});
const overviewReply = z.object({
  period: z.enum(OVERVIEW_PERIODS),
  from: z.string(),
  to: z.string(),
  totals: metricValues,
  by_model: z.array(z.looseObject({ provider: z.string().nullable(), model: z.string() })),
  conversion: z.array(z.looseObject({ workflow: z.string() })),
});
const funnelReply = z.object({
  from: z.string(),
  to: z.string(),
  window_ms: z.number().int(),
  by: z.enum(['user', 'request']),
  subjects: z.number().int(),
  steps: z.array(
    z.object({
      event: z.string(),
      where: z.record(z.string(), z.string()).optional(),
      count: z.number().int(),
      conversion_from_previous: z.number().nullable(),
      conversion_from_first: z.number().nullable(),
      drop_off: z.number().int(),
      median_ms_from_previous: z.number().nullable(),
    }),
  ),
});

const docSchemas = analyticsSchemas(Date.now);
const WHOSE = "A key reads its own user (default) or its own project; a filter on anyone else's is refused (403). An admin reads anyone's.";
export const openapi = [
  route({
    method: 'post', path: '/v1/analytics/query', tag: 'Analytics', guard: 'costs',
    summary: 'Metrics over time, grouped and filtered',
    description: `At most 1,600 buckets a query; groups paged by \`limit\` and \`next_cursor\`. ${WHOSE}`,
    body: { content: { 'application/json': docSchemas.querySchema } },
    responses: { 200: { description: 'Buckets, groups with totals and series.', content: { 'application/json': queryReply } } },
  }),
  route({
    method: 'get', path: '/v1/analytics/overview', tag: 'Analytics', guard: 'costs',
    summary: 'Headline numbers of this hour, day, week or month (UTC)', description: WHOSE,
    query: docSchemas.overviewSchema,
    responses: { 200: { description: 'Totals, per model, conversion per workflow.', content: { 'application/json': overviewReply } } },
  }),
  route({
    method: 'post', path: '/v1/analytics/funnel', tag: 'Analytics', guard: 'costs',
    summary: 'Ordered event steps within a window, by user or request', description: WHOSE,
    body: { content: { 'application/json': docSchemas.funnelSchema } },
    responses: { 200: { description: 'Each step\'s count, conversion and drop-off.', content: { 'application/json': funnelReply } } },
  }),
];

export function analyticsRoutes(guards: Guards, opts: AnalyticsRouteOptions): Router {
  const router = Router();
  const now = opts.now ?? Date.now;
  const { querySchema, overviewSchema, funnelSchema } = analyticsSchemas(now);

  router.post('/v1/analytics/query', ...guards.costs, async (req, res) => {
    const body = querySchema.parse(req.body);
    const filters = scoped(principalOf(res), body.filters as Partial<Record<Dimension, string[]>>);
    const result = await opts.reader.query({
      metrics: body.metrics,
      group_by: [...new Set(body.group_by)],
      filters,
      from: body.from,
      to: body.to ?? now(),
      granularity: body.granularity,
      limit: body.limit,
      ...(body.cursor !== undefined && { cursor: Number(body.cursor) }),
    });
    res.json(result);
  });

  router.get('/v1/analytics/overview', ...guards.costs, async (req, res) => {
    const q = overviewSchema.parse(req.query);
    const filters = scoped(principalOf(res), { ...(q.user && { user: [q.user] }), ...(q.project && { project: [q.project] }) });
    res.json(await opts.reader.overview(q.period, filters));
  });

  router.post('/v1/analytics/funnel', ...guards.costs, async (req, res) => {
    const body = funnelSchema.parse(req.body);
    const filters = scoped(principalOf(res), body.filters as Partial<Record<Dimension, string[]>>);
    const to = body.to ?? now();
    if (to <= body.from) throw queryError('to', '"to" must be after "from".');
    res.json(
      await opts.funnels.run({
        steps: body.steps,
        window_ms: body.window,
        from: body.from,
        to,
        by: body.by,
        ...(filters.user && { users: filters.user }),
        ...(filters.project && { projects: filters.project }),
      }),
    );
  });

  return router;
}
