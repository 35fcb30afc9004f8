import { z } from 'zod';
import { ERROR_CATEGORIES, RECOVERY_STRATEGIES } from '../errors/classify';

/**
 * The event catalog: every event type Tollgate publishes, with the schema of its `data`.
 * Adding an optional field is compatible; any other change of shape bumps `version`.
 */

/** Integer micro-dollars (1 USD = 1,000,000); money is never a float. */
export const micros = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const name = z.string().min(1).max(128);

/** The classifier's lists, as event fields carry them. */
export const ERROR_CATEGORY_VALUES = ERROR_CATEGORIES;
export const RECOVERY_STRATEGY_VALUES = RECOVERY_STRATEGIES;

const workflowKind = z.enum(['chat', 'vision']);

/** Cache outcome of a request, as `x-tollgate-cache` reports it. */
export const EVENT_CACHE_STATUSES = ['hit', 'miss', 'bypass', 'refresh'] as const;

/**
 * Optional request dimensions stamped on the workflow lifecycle events, for analytics: the HTTP
 * route that took the request, whether it streamed, its cache outcome, the flag variant it was
 * served under and the journey it belongs to.
 */
const requestTags = {
  route: z.string().min(1).max(128).optional(),
  streamed: z.boolean().optional(),
  cache: z.enum(EVENT_CACHE_STATUSES).optional(),
  flag_variant: name.optional(),
  journey: name.optional(),
};
const scope = z.enum(['global', 'user', 'project']);
const period = z.enum(['day', 'week', 'month']);

/** Units a provider bills. `output_tokens` excludes reasoning tokens; `cached_input_tokens` is a subset of `input_tokens`. */
export const usageUnitsSchema = z.object({
  input_tokens: count.optional(),
  cached_input_tokens: count.optional(),
  output_tokens: count.optional(),
  reasoning_tokens: count.optional(),
  images: count.optional(),
  /** Grounded calls that ran at least one search (Gemini 2.x bills these). */
  grounded_prompts: count.optional(),
  /** Unique non-empty search queries (Gemini 3 bills these). */
  search_queries: count.optional(),
  /** External operations (`/v1/usage`): calls made and units in the operation's own measure. */
  calls: count.optional(),
  quantity: count.optional(),
});

/** How an error was handled: what the caller is told and what the system did. */
export const resolutionSchema = z.object({
  category: z.enum(ERROR_CATEGORY_VALUES),
  strategy: z.enum(RECOVERY_STRATEGY_VALUES),
  code: name,
  message: z.string().max(1000),
  suggested_actions: z.array(z.string().max(500)).max(10),
  retryable: z.boolean(),
});

const circuitData = z.object({
  breaker: name,
  provider: name,
  operation: name,
  failures: count,
  reason: z.string().max(500),
  /** The announcing instance, so it can ignore its own announcement. */
  instance: name.optional(),
});

/** What every journey event says: which journey, on which template version. */
const journeyData = z.object({
  journey: name,
  template: name,
  template_version: z.number().int().min(1),
  external_id: name.optional(),
});

export const EVENT_CATALOG = {
  'workflow.started': {
    version: 1,
    data: z.object({ workflow: workflowKind, job_id: name.optional(), attempt: z.number().int().min(1).optional(), ...requestTags }),
  },
  'workflow.completed': {
    version: 1,
    data: z.object({
      workflow: workflowKind,
      job_id: name.optional(),
      duration_ms: count,
      provider: name.optional(),
      model: name.optional(),
      ...requestTags,
      /** From the gateway's enqueue to the end of the answer: what the client waited, minus HTTP. */
      latency_ms: count.optional(),
      /** From the gateway's enqueue to the first content chunk of a streamed answer. */
      ttft_ms: count.optional(),
      /** From the first content chunk to the last (output tokens per second divide by this). */
      generation_ms: count.optional(),
      attempts: z.number().int().min(1).optional(),
      fallback_used: z.boolean().optional(),
      input_tokens: count.optional(),
      output_tokens: count.optional(),
    }),
  },
  'workflow.failed': {
    version: 1,
    data: z.object({
      workflow: workflowKind,
      job_id: name.optional(),
      duration_ms: count,
      error: resolutionSchema,
      ...requestTags,
      latency_ms: count.optional(),
      attempts: z.number().int().min(0).optional(),
      fallback_used: z.boolean().optional(),
      provider: name.optional(),
      model: name.optional(),
    }),
  },
  /** The gateway turned a request away before any work: rate limit or hard budget. */
  'request.refused': {
    version: 1,
    data: z.object({
      route: z.string().min(1).max(128),
      reason: z.enum(['rate_limited', 'budget_exceeded']),
      code: name,
      workflow: workflowKind.optional(),
      streamed: z.boolean().optional(),
    }),
  },
  'chat.message_received': {
    version: 1,
    data: z.object({
      conversation_id: name,
      message_chars: count,
      history_messages: count,
      model_requested: name.optional(),
    }),
  },
  'chat.response_generated': {
    version: 1,
    data: z.object({
      conversation_id: name,
      provider: name,
      model: name,
      response_chars: count,
      input_tokens: count,
      output_tokens: count,
      latency_ms: count,
      attempts: z.number().int().min(1),
      fallback_used: z.boolean(),
      /**
       * Served from the gateway's answer cache: no provider was called. Provider, model, tokens,
       * attempts and fallback describe the stored answer reused; `latency_ms` is 0.
       */
      cached: z.boolean().optional(),
    }),
  },
  'vision.analysis_completed': {
    version: 1,
    data: z.object({
      provider: name,
      model: name,
      cached: z.boolean(),
      latency_ms: count,
      image_sha256: z.string().regex(/^[a-f0-9]{64}$/),
      quality: z.enum(['standard', 'high']),
      degraded: z.boolean(),
    }),
  },
  'rag.context_retrieved': {
    version: 1,
    data: z.object({
      source: name,
      query_chars: count,
      documents: count,
      latency_ms: count,
      /** Who retrieved it (Gemini with the googleSearch tool). */
      provider: name.optional(),
      model: name.optional(),
      /** The search queries the model ran (webSearchQueries). */
      queries: z.array(z.string().max(1000)).max(100).optional(),
      /** The web pages the context came from (groundingChunks). */
      sources: z.array(z.object({ title: z.string().max(1000), uri: z.string().max(4096) })).max(100).optional(),
      /** What the retrieval cost (on a cache hit: zero) and the search fee inside it. */
      cost_micros: micros.optional(),
      search_micros: micros.optional(),
      /** Served from the RAG context cache: nothing was searched or billed; `avoided_micros` is what it saved. */
      cached: z.boolean().optional(),
      avoided_micros: micros.optional(),
    }),
  },
  'usage.recorded': {
    version: 1,
    data: z.object({
      provider: name,
      model: name,
      service: name,
      operation: name,
      units: usageUnitsSchema,
      /** Where the counts came from: the provider's own usage, our tokenizer when the provider sent none, a cache hit, or an application reporting an external call (/v1/usage). */
      usage_source: z.enum(['provider', 'tokenizer', 'cache', 'reported']),
      request_id: name,
      /** A cache hit: priced at zero, with what the call would have cost recorded as avoided. */
      cached: z.boolean(),
      avoided_micros: micros.optional(),
      /** On a cache hit: the request whose paid answer was reused. */
      reused_request_id: name.optional(),
      /** SHA-256 of what was asked (model + input): identical requests a cache could have absorbed. */
      request_fingerprint: z.string().regex(/^[a-f0-9]{64}$/).optional(),
      /** The budget hold admission made for the request: the ledger settles it with this call's cost. */
      hold_id: z.string().uuid().optional(),
      /** The instant whose price version applies, when not the call's own: a reported external call is priced as its hold was. */
      priced_at: z.iso.datetime().optional(),
    }),
  },
  'cost.recorded': {
    version: 1,
    data: z.object({
      entry_id: name,
      usage_event_id: name,
      amount_micros: micros,
      avoided_micros: micros.optional(),
      price_version: name,
      provider: name,
      model: name,
      service: name,
      operation: name,
      units: usageUnitsSchema,
      cached: z.boolean(),
      occurred_at: z.iso.datetime(),
      totals: z.array(
        z.object({ scope, scope_id: name, period, period_key: name, spent_micros: micros }),
      ),
    }),
  },
  'cost.report_generated': {
    version: 1,
    data: z.object({
      period: period,
      period_key: name,
      total_micros: micros,
      previous_total_micros: micros,
      entries: count,
    }),
  },
  'cost.threshold_exceeded': {
    version: 1,
    data: z.object({
      alert_id: name,
      fingerprint: name,
      state: z.enum(['firing', 'resolved']),
      scope,
      scope_id: name,
      period,
      period_key: name,
      threshold_pct: z.number().int().min(1).max(1000),
      spent_micros: micros,
      limit_micros: micros,
      hard: z.boolean(),
      top_contributors: z.array(z.object({ dimension: name, key: name, micros })).max(20),
    }),
  },
  'error.occurred': {
    version: 1,
    data: z.object({
      service: name,
      category: z.enum(ERROR_CATEGORY_VALUES),
      strategy: z.enum(RECOVERY_STRATEGY_VALUES),
      code: name,
      message: z.string().max(1000),
      provider: name.optional(),
      operation: name.optional(),
    }),
  },
  'circuit.opened': { version: 1, data: circuitData },
  'circuit.closed': { version: 1, data: circuitData },
  /** The audit record of one flag or segment change: who, when, before and after (null: absent). */
  'flag.changed': {
    version: 1,
    data: z.object({
      name: z.string().min(1).max(200),
      kind: z.enum(['flag', 'segment']),
      action: z.enum(['created', 'updated', 'deleted']),
      actor: name,
      at: z.iso.datetime(),
      before: z.record(z.string(), z.unknown()).nullable(),
      after: z.record(z.string(), z.unknown()).nullable(),
      version: z.number().int().positive(),
    }),
  },
  /** The flag store moved to `version`: every instance reloads its snapshot. */
  'flags.changed': {
    version: 1,
    data: z.object({ version: z.number().int().positive(), names: z.array(z.string().min(1).max(200)).max(10_000), actor: name }),
  },
  /** A subject was first served a variant of an experiment today (once per subject, flag and UTC day). */
  'flag.exposed': {
    version: 1,
    data: z.object({
      flag: z.string().min(1).max(200),
      variant: z.string().min(1).max(200),
      subject: z.string().min(1).max(500),
      feature_enabled: z.boolean(),
      day: z.string().regex(/^\d{4}-\d{2}-\d{2}$/),
    }),
  },
  /** A journey began (POST /v1/journeys), on the template version it keeps to its end. */
  'journey.started': { version: 1, data: journeyData },
  /** One step of a journey was completed by the event `by_event_id` (once, however often that event is delivered). */
  'journey.step_completed': {
    version: 1,
    data: journeyData.extend({
      step: name,
      by_event_id: name,
      by_event_type: name,
      /** From when the step could start (journey start or its last dependency) to its completion. */
      time_in_step_ms: count,
      progress_pct: z.number().min(0).max(100),
    }),
  },
  /** Every required step is done. */
  'journey.completed': { version: 1, data: journeyData.extend({ duration_ms: count, progress_pct: z.number().min(0).max(100) }) },
  /** No activity for the template's abandonment window; `at_step` is the first required step left open. */
  'journey.abandoned': { version: 1, data: journeyData.extend({ idle_ms: count, at_step: name.optional(), progress_pct: z.number().min(0).max(100) }) },
  /** Its owner (or an admin) ended it. */
  'journey.cancelled': { version: 1, data: journeyData.extend({ at_step: name.optional(), progress_pct: z.number().min(0).max(100) }) },
} as const;

export type EventType = keyof typeof EVENT_CATALOG;
export const EVENT_TYPES = Object.keys(EVENT_CATALOG) as EventType[];
export type EventData<T extends EventType> = z.infer<(typeof EVENT_CATALOG)[T]['data']>;
export type UsageUnits = z.infer<typeof usageUnitsSchema>;
export type Resolution = z.infer<typeof resolutionSchema>;

export function isEventType(type: string): type is EventType {
  return Object.prototype.hasOwnProperty.call(EVENT_CATALOG, type);
}
