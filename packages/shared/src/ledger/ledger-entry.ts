import { z } from 'zod';
import { micros, usageUnitsSchema } from '../events/catalog';

/** One priced provider call, as stored and as served by the cost API. */
export const ledgerEntrySchema = z.object({
  entry_id: z.string(),
  usage_event_id: z.string(),
  amount_micros: micros,
  /** What a cache hit saved; the entry itself costs zero then. */
  avoided_micros: micros,
  price_version: z.string(),
  provider: z.string(),
  model: z.string(),
  service: z.string(),
  operation: z.string(),
  units: usageUnitsSchema,
  /** The Google Search grounding fee inside amount_micros (on a hit: inside avoided_micros); absent when the call searched nothing. */
  search_micros: micros.optional(),
  cached: z.boolean(),
  /** On a cache hit: the request whose paid answer was reused. */
  reused_request_id: z.string().optional(),
  usage_source: z.enum(['provider', 'tokenizer', 'cache', 'reported']),
  user_id: z.string(),
  project_id: z.string(),
  correlation_id: z.string(),
  request_id: z.string(),
  /** The journey the request belonged to (`x-tollgate-journey`), and the step it was tagged with. */
  journey_id: z.string().optional(),
  journey_step: z.string().optional(),
  occurred_at: z.string(),
  recorded_at: z.string(),
});
export type LedgerEntry = z.infer<typeof ledgerEntrySchema>;

/** Spend with no user or project on the event is still counted, under this id. */
export const UNATTRIBUTED = '(none)';

/** Output shorter than this on an expensive model is evidence for a cheaper one. */
export const SHORT_OUTPUT_TOKENS = 50;
