import { Router, type Response } from 'express';
import {
  type DeadLetter,
  formatUsd,
  GROUP_DIMENSIONS,
  type LedgerEntry,
  ledgerEntrySchema,
  type LedgerReader,
  type PriceTable,
  type Scope,
} from '@tollgate/shared';
import { z } from 'zod';
import { type Principal, principalOf } from '../auth/middleware';
import { ApiError } from '../errors';
import type { ReportDispatcher } from '../report-dispatch';
import type { Guards } from './guards';
import { moneySchema, route } from '../openapi/registry';

export interface CostRouteOptions {
  reader: LedgerReader;
  reports: ReportDispatcher;
  priceTable: PriceTable;
  /** The cost-ledger's dead letters: usage it could not price. */
  deadLetters: (count: number) => Promise<DeadLetter[]>;
}

const id = z.string().regex(/^[A-Za-z0-9._()-]{1,64}$/, 'letters, digits, dot, dash, underscore or parentheses (1-64)');
/** A UTC date (2026-11-25) or a date-time with its zone. */
const instant = z
  .string()
  .refine((s) => /^\d{4}-\d{2}-\d{2}$/.test(s) || /^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})$/.test(s), 'a date (YYYY-MM-DD) or an ISO date-time with a zone')
  .transform((s) => new Date(s))
  .refine((d) => !Number.isNaN(d.getTime()), 'not a real date');
const period = z.enum(['day', 'week', 'month']);

const summaryQuery = z.strictObject({
  period: period.default('day'),
  at: instant.optional(),
  group_by: z.enum(GROUP_DIMENSIONS).optional(),
  user_id: id.optional(),
  project_id: id.optional(),
});

const entriesQuery = z.strictObject({
  from: instant.optional(),
  to: instant.optional(),
  user_id: id.optional(),
  project_id: id.optional(),
  provider: z.string().max(64).optional(),
  model: z.string().max(128).optional(),
  service: z.string().max(64).optional(),
  operation: z.string().max(64).optional(),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
  cursor: z.string().regex(/^[A-Za-z0-9_-]{1,200}$/).optional(),
});

const CSV_COLUMNS = [
  'entry_id', 'occurred_at', 'user_id', 'project_id', 'service', 'operation', 'provider', 'model',
  'input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_tokens', 'images', 'search_queries',
  'amount_micros', 'amount_usd', 'avoided_micros', 'price_version', 'usage_source', 'cached', 'request_id',
  // Added with external usage; at the end, so readers by column position keep working.
  'calls', 'quantity',
] as const;

const atQuery = z.strictObject({ at: instant.optional() });
const deadLetterQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1_000).default(100) });
const csvQuery = entriesQuery.omit({ limit: true, cursor: true });

const groupRow = moneySchema.extend({ key: z.string() });
const costScope = z.union([z.literal('all'), z.object({ user: z.string().optional(), project: z.string().optional() })]);
const summaryReply = z
  .object({
    period,
    period_key: z.string().meta({ examples: ['2026-11-25', '2026-W48', '2026-11'] }),
    start: z.string(),
    end: z.string(),
    total: moneySchema,
    avoided: moneySchema.meta({ description: 'What cache hits saved.' }),
    entries: z.number().int(),
    group_by: z.enum(GROUP_DIMENSIONS).optional(),
    groups: z.array(groupRow).optional(),
    scope: costScope,
  })
  .meta({ id: 'CostSummary' });
const entryReply = ledgerEntrySchema.extend({ amount_usd: z.string(), avoided_usd: z.string() }).meta({ id: 'LedgerEntry' });
const entriesReply = z.object({ entries: z.array(entryReply), next_cursor: z.string().nullable() }).meta({ id: 'LedgerPage' });
const reportReply = z
  .looseObject({
    period,
    period_key: z.string(),
    start: z.string(),
    end: z.string(),
    total: moneySchema,
    avoided: moneySchema,
    entries: z.number().int(),
    previous_total: moneySchema,
    change: moneySchema.extend({ micros: z.number().int().meta({ description: 'May be negative.' }), pct: z.number().nullable() }),
    top: z.record(z.enum(['services', 'operations', 'providers', 'models', 'users', 'projects']), z.array(groupRow)),
    generated_at: z.string(),
    analytics: z.record(z.string(), z.unknown()).optional().meta({ description: 'Latency, errors and conversion of the period, when the analytics rollups have them.' }),
  })
  .meta({ id: 'CostReport' });
const recommendationsReply = z.object({
  recommendations: z.array(
    z.object({
      id: z.enum(['vision_to_deepseek', 'cache_repeated_requests', 'cheaper_model_for_short_outputs']),
      title: z.string(),
      estimated_monthly_saving: moneySchema,
      evidence: z.record(z.string(), z.union([z.string(), z.number()])),
    }),
  ),
});
const deadLettersReply = z.object({
  dead_letters: z.array(z.object({ id: z.string(), handler: z.string(), reason: z.string(), attempts: z.number().int(), failed_at: z.string(), event: z.unknown() })),
});

const WHOSE = 'A key reads its own user (default) or its own project (`project_id`); an admin anyone\'s, or everything without a filter.';
export const openapi = [
  route({
    method: 'get', path: '/v1/costs/summary', tag: 'Costs', guard: 'costs',
    summary: 'Spend of a day, week or month, optionally grouped',
    description: `Totals from the ledger's aggregates for the UTC period containing \`at\`. ${WHOSE} Grouping by user or project needs an admin and no filter.`,
    query: summaryQuery,
    responses: { 200: { description: 'The period\'s total and groups.', content: { 'application/json': summaryReply } } },
  }),
  route({
    method: 'get', path: '/v1/costs/entries', tag: 'Costs', guard: 'costs',
    summary: 'Ledger entries, newest first, paged',
    description: `One entry per priced provider call (or cache hit, at zero with what it saved). ${WHOSE}`,
    query: entriesQuery,
    responses: { 200: { description: 'A page of entries; `next_cursor` continues.', content: { 'application/json': entriesReply } } },
  }),
  route({
    method: 'get', path: '/v1/costs/entries.csv', tag: 'Costs', guard: 'costs',
    summary: 'Ledger entries as CSV (every page)',
    description: `Columns: ${CSV_COLUMNS.join(', ')}. \`amount_micros\` and \`avoided_micros\` are integer micro-dollars. ${WHOSE}`,
    query: csvQuery,
    responses: { 200: { description: 'CSV, one row per entry.', content: { 'text/csv': z.string() } } },
  }),
  route({
    method: 'get', path: '/v1/costs/reports/:period', tag: 'Costs', guard: 'costs', scope: 'admin',
    summary: 'Cost report of a period (top spenders, change, analytics)',
    params: z.object({ period }),
    query: atQuery,
    responses: { 200: { description: 'The report.', content: { 'application/json': reportReply } } },
  }),
  route({
    method: 'get', path: '/v1/costs/recommendations', tag: 'Costs', guard: 'costs', scope: 'admin',
    summary: 'Ways to spend less, with the evidence',
    query: atQuery,
    responses: { 200: { description: 'Recommendations with estimated monthly savings.', content: { 'application/json': recommendationsReply } } },
  }),
  route({
    method: 'get', path: '/v1/costs/dead-letters', tag: 'Costs', guard: 'costs', scope: 'admin',
    summary: 'Usage the ledger could not price',
    query: deadLetterQuery,
    responses: { 200: { description: 'Dead-lettered usage events.', content: { 'application/json': deadLettersReply } } },
  }),
];

const isAdmin = (p: Principal) => p.scopes.includes('admin');

/**
 * Whose money a request may see: an admin anyone's (or everything), any other key its own user
 * or its own project, and nothing else.
 */
function scopeFor(p: Principal, q: { user_id?: string; project_id?: string }): Scope | undefined {
  if (q.user_id && q.project_id) throw new ApiError('invalid_request', 'Filter by user_id or by project_id, not both.');
  if (isAdmin(p)) return q.user_id ? { user: q.user_id } : q.project_id ? { project: q.project_id } : undefined;
  if (q.user_id && q.user_id !== p.user_id) throw new ApiError('forbidden', "This key may only read its own user's costs.");
  if (q.project_id && q.project_id !== p.project_id) throw new ApiError('forbidden', "This key may only read its own project's costs.");
  return q.project_id ? { project: p.project_id } : { user: p.user_id };
}

function csvCell(value: string | number | boolean): string {
  const s = String(value);
  // Quote what would break the row, and defuse spreadsheet formulas in client-supplied text.
  const safe = /^[=+\-@\t\r]/.test(s) && typeof value === 'string' ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

function csvRow(e: LedgerEntry): string {
  const u = e.units;
  const values: Record<(typeof CSV_COLUMNS)[number], string | number | boolean> = {
    entry_id: e.entry_id, occurred_at: e.occurred_at, user_id: e.user_id, project_id: e.project_id,
    service: e.service, operation: e.operation, provider: e.provider, model: e.model,
    input_tokens: u.input_tokens ?? 0, cached_input_tokens: u.cached_input_tokens ?? 0, output_tokens: u.output_tokens ?? 0,
    reasoning_tokens: u.reasoning_tokens ?? 0, images: u.images ?? 0, search_queries: u.search_queries ?? 0,
    calls: u.calls ?? 0, quantity: u.quantity ?? 0,
    amount_micros: e.amount_micros, amount_usd: formatUsd(e.amount_micros), avoided_micros: e.avoided_micros,
    price_version: e.price_version, usage_source: e.usage_source, cached: e.cached, request_id: e.request_id,
  };
  return CSV_COLUMNS.map((c) => csvCell(values[c])).join(',');
}

function withMoney(e: LedgerEntry) {
  return { ...e, amount_usd: formatUsd(e.amount_micros), avoided_usd: formatUsd(e.avoided_micros) };
}

function requireAdmin(res: Response): void {
  if (!isAdmin(principalOf(res))) throw new ApiError('forbidden', 'This endpoint needs a key with the "admin" scope.');
}

export function costRoutes(guards: Guards, o: CostRouteOptions): Router {
  const router = Router();

  router.get('/v1/costs/summary', ...guards.costs, async (req, res) => {
    const q = summaryQuery.parse(req.query);
    const who = principalOf(res);
    const scope = scopeFor(who, q);
    if ((q.group_by === 'user' || q.group_by === 'project') && scope) {
      throw new ApiError(isAdmin(who) ? 'invalid_request' : 'forbidden', `Grouping by ${q.group_by} covers everyone's spend: it needs an admin key and no user_id/project_id filter.`);
    }
    const summary = await o.reader.summary({ period: q.period, at: q.at ?? new Date(), ...(q.group_by && { groupBy: q.group_by }), ...(scope && { scope }) });
    const reply: z.input<typeof summaryReply> = { ...summary, scope: scope ?? 'all' };
    res.json(reply);
  });

  router.get('/v1/costs/entries', ...guards.costs, async (req, res) => {
    const q = entriesQuery.parse(req.query);
    const scope = scopeFor(principalOf(res), q);
    const page = await o.reader.entries({ ...q, ...(scope && { scope }) });
    const reply: z.input<typeof entriesReply> = { entries: page.entries.map(withMoney), next_cursor: page.next_cursor };
    res.json(reply);
  });

  router.get('/v1/costs/entries.csv', ...guards.costs, async (req, res) => {
    const q = csvQuery.parse(req.query);
    const scope = scopeFor(principalOf(res), q);
    res.setHeader('content-type', 'text/csv; charset=utf-8');
    res.setHeader('content-disposition', 'attachment; filename="tollgate-costs.csv"');
    res.write(`${CSV_COLUMNS.join(',')}\n`);
    let cursor: string | undefined;
    do {
      const page = await o.reader.entries({ ...q, ...(scope && { scope }), limit: 1_000, ...(cursor && { cursor }) });
      if (page.entries.length) res.write(`${page.entries.map(csvRow).join('\n')}\n`);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    res.end();
  });

  router.get('/v1/costs/reports/:period', ...guards.costs, async (req, res) => {
    requireAdmin(res);
    const p = period.safeParse(req.params.period);
    if (!p.success) throw new ApiError('invalid_request', 'The report period must be day, week or month.');
    const q = atQuery.parse(req.query);
    res.json(await o.reports.get(p.data, q.at ?? new Date()));
  });

  router.get('/v1/costs/recommendations', ...guards.costs, async (req, res) => {
    requireAdmin(res);
    const q = atQuery.parse(req.query);
    res.json({ recommendations: await o.reader.recommendations(q.at ?? new Date(), o.priceTable) });
  });

  router.get('/v1/costs/dead-letters', ...guards.costs, async (req, res) => {
    requireAdmin(res);
    const q = deadLetterQuery.parse(req.query);
    const letters = await o.deadLetters(q.limit);
    res.json({
      dead_letters: letters.map((d) => {
        let event: unknown;
        try {
          event = JSON.parse(d.raw);
        } catch {
          event = d.raw;
        }
        return { id: d.streamId, handler: d.handler, reason: d.reason, attempts: d.attempts, failed_at: d.failedAt, event };
      }),
    });
  });

  return router;
}
