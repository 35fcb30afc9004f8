import { type ChatGrounding, type GroundingOutcome, formatUsd, type PriceTable, resolveModelPrice, selectPriceVersion } from '@tollgate/shared';
import { z } from 'zod';
import type { Principal } from './auth/middleware';
import { ApiError } from './errors';

/** The model that searches when the request names none: Gemini 2.x, billed per grounded prompt. */
export const DEFAULT_GROUNDING_MODEL = 'gemini-2.0-flash';

/** `POST /v1/chat`'s `grounding`: `true`, or options. */
export const groundingField = z.union([
  z.boolean(),
  z.strictObject({
    /** The Gemini model that runs the search; its price says whether it bills per prompt or per query. */
    model: z.string().regex(/^gemini-[A-Za-z0-9._-]{1,100}$/, 'a Gemini model name').optional(),
    /** Only pages published in this window (ISO date-times). */
    time_range: z.strictObject({ start: z.iso.datetime(), end: z.iso.datetime() }).optional(),
  }),
]);

/**
 * OpenAI's `web_search_options` (Chat Completions). Its fields are accepted; Google Search takes
 * none of them (`search_context_size`, `user_location` have no googleSearch equivalent), so they
 * only shape the cache key.
 */
export const webSearchOptionsField = z.looseObject({
  search_context_size: z.enum(['low', 'medium', 'high']).optional(),
  user_location: z.unknown().optional(),
});

export type GroundingAsk = z.infer<typeof groundingField> | 'web_search_options' | undefined;

/**
 * The one place where a request's grounding is decided: what was asked, checked against the
 * price table (a model that cannot be priced for search cannot ground). Feature flags (a kill
 * switch, per-project rollout) belong here: return undefined, or throw, for a request that may
 * not ground. `who` is passed for that.
 */
export function decideGrounding(ask: GroundingAsk, _who: Principal, table: PriceTable): ChatGrounding | undefined {
  if (ask === undefined || ask === false) return undefined;
  const options = typeof ask === 'object' ? ask : {};
  const model = options.model ?? DEFAULT_GROUNDING_MODEL;
  let rates;
  try {
    rates = resolveModelPrice(selectPriceVersion(table, new Date()), 'gemini', model).price;
  } catch {
    throw new ApiError('invalid_request', `Grounding model "${model}" is not in the price table.`);
  }
  if (rates.per_grounded_prompt === undefined && rates.per_search_query === undefined) {
    throw new ApiError('invalid_request', `Grounding model "${model}" has no Google Search price, so it cannot ground.`);
  }
  if (options.time_range && Date.parse(options.time_range.start) >= Date.parse(options.time_range.end)) {
    throw new ApiError('invalid_request', 'grounding.time_range.start must be before its end.');
  }
  return { ...(options.model && { model }), ...(options.time_range && { time_range: options.time_range }) };
}

/** The `grounding` block of a response: the sources to show and the HTML Google requires beside the answer. */
export function groundingBody(g: GroundingOutcome) {
  return {
    sources: g.sources,
    search_entry_point: g.search_entry_point_html ? { rendered_content: g.search_entry_point_html } : null,
    queries: g.queries,
    retrieved_by: { provider: g.provider, model: g.model },
    cached: g.cached,
    cost: { micros: g.cost_micros, usd: formatUsd(g.cost_micros) },
    search_fee: { micros: g.search_micros, usd: formatUsd(g.search_micros) },
    ...(g.avoided_micros !== undefined && { saved: { micros: g.avoided_micros, usd: formatUsd(g.avoided_micros) } }),
  };
}
