import { CACHE_STATUSES, usageUnitsSchema } from '@tollgate/shared';
import { z } from 'zod';
import { microsSchema, moneySchema } from './registry';

/** Response parts several routes share (chat, completions, vision); each route's own schemas live in its file. */

/** What a call cost at today's prices; absent when its model is not in the price table. */
export const costSchema = moneySchema
  .extend({ price_version: z.string().optional().meta({ description: 'The price table version that priced it.' }) })
  .meta({ id: 'Cost' });

export const cacheInfoSchema = z
  .object({
    status: z.enum(CACHE_STATUSES),
    reason: z.string().optional().meta({ description: 'Why the cache was not used (BYPASS).' }),
    age_seconds: z.number().int().optional(),
    reused_request_id: z.string().optional().meta({ description: 'On a HIT: the request whose paid answer was served.' }),
    saved: moneySchema.optional().meta({ description: 'On a HIT: what the answer cost when it was paid for.' }),
  })
  .meta({ id: 'CacheInfo' });

export const groundingBodySchema = z
  .object({
    sources: z.array(z.object({ title: z.string(), uri: z.string() })),
    search_entry_point: z
      .object({ rendered_content: z.string().meta({ description: "Google's search suggestions (HTML), to be shown beside a grounded answer." }) })
      .nullable(),
    queries: z.array(z.string()),
    retrieved_by: z.object({ provider: z.string(), model: z.string() }),
    cached: z.boolean(),
    cost: moneySchema,
    search_fee: moneySchema,
    saved: moneySchema.optional(),
  })
  .meta({ id: 'Grounding' });

/** Units as billed, and where the counts came from. */
export const usageSchema = usageUnitsSchema.extend({ source: z.enum(['provider', 'tokenizer', 'cache']) });

/** The caching headers a request may send (parsed by parseCacheDirective). */
export const cacheRequestHeaders = z.object({
  'cache-control': z
    .string()
    .optional()
    .meta({ description: '`no-cache` (refresh), `no-store` (bypass) or `max-age=N` (accept an answer at most N seconds old).' }),
  'x-tollgate-cache-namespace': z.string().optional().meta({ description: 'A partition of the caller\'s cache (same tenant, separate entries).' }),
});

export const cacheResponseHeaders = z.object({
  'x-tollgate-cache': z.enum(CACHE_STATUSES).meta({ description: 'HIT, MISS, BYPASS or REFRESH.' }),
  'x-tollgate-provider': z.string().meta({ description: 'The provider that answered.' }),
  'x-tollgate-cache-saved-micros': microsSchema.optional().meta({ description: 'On a HIT: what it saved, in integer micro-dollars.' }),
});
