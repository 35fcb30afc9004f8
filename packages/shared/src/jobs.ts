import { z } from 'zod';
import { PROVIDER_NAMES } from './config';
import { jobCacheSchema } from './cache/cache-job';
import { ERROR_CATEGORY_VALUES, usageUnitsSchema } from './events/catalog';
import { unitNamespace } from './keys';

/** BullMQ queue names; the queue prefix comes from `queuePrefix`. */
export const QUEUES = { chat: 'chat', vision: 'vision', reports: 'ledger-reports', webhooks: 'webhooks' } as const;

/** BullMQ keys live under the app namespace so one prefix (and one hash tag) covers everything. */
export function queuePrefix(namespace: string): string {
  return `${namespace}:q`;
}

/**
 * Crash recovery for the request workers (chat, vision). A job's lock lasts `lockDuration` and is
 * renewed at half of it while its worker lives; every `stalledInterval` a worker moves jobs whose
 * lock is gone back to the queue. So a SIGKILLed worker's jobs run again within about 20 s, well
 * inside the request deadline. BullMQ's defaults (30 s and 30 s) took up to a minute, so with the
 * default 60 s deadline every in-flight request of a crashed worker timed out instead.
 */
export const WORKER_RECOVERY = { lockDuration: 15_000, stalledInterval: 5_000 } as const;

const id = z.string().min(1).max(128);

export const cappedTargetSchema = z.object({
  provider: z.enum(PROVIDER_NAMES),
  model: z.string().min(1).max(128),
  max_output_tokens: z.number().int().min(1).max(100_000),
});

/** A paid job's budget hold (see budget/holds.ts): the worker ends it when the run ends. */
export const holdJobFields = {
  hold_id: z.string().uuid().optional(),
  /** Stored history the hold counted; the worker sends no more of it than this. */
  history_max_bytes: z.number().int().nonnegative().optional(),
};

export const chatMessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant']),
  content: z.string().max(200_000),
});

/** Grounding options as the gateway resolved them. */
export const chatGroundingSchema = z.object({
  /** The Gemini model that runs the search (its price says how the search is billed). */
  model: z.string().regex(/^gemini-[A-Za-z0-9._-]{1,100}$/).optional(),
  /** Only pages from this window; ISO date-times. */
  time_range: z.object({ start: z.iso.datetime(), end: z.iso.datetime() }).optional(),
});
export type ChatGrounding = z.infer<typeof chatGroundingSchema>;

/** What a grounded answer was based on: the sources to show, and Google's search suggestions HTML. */
export const groundingOutcomeSchema = z.object({
  queries: z.array(z.string()),
  sources: z.array(z.object({ title: z.string(), uri: z.string() })),
  /** searchEntryPoint.renderedContent: must be shown beside a grounded answer. Absent when nothing was searched. */
  search_entry_point_html: z.string().optional(),
  provider: z.string(),
  model: z.string(),
  /** The context came from the RAG cache: no search was run or paid for. */
  cached: z.boolean(),
  /** What this request paid for the retrieval, and the search fee inside it. */
  cost_micros: z.number().int().nonnegative(),
  search_micros: z.number().int().nonnegative(),
  avoided_micros: z.number().int().nonnegative().optional(),
});
export type GroundingOutcome = z.infer<typeof groundingOutcomeSchema>;
/**
 * Request dimensions the gateway hands the worker for analytics, stamped on the workflow events;
 * `enqueued_at` (epoch ms) is filled from the job's own timestamp when absent.
 */
export const jobTags = {
  route: z.string().min(1).max(128).optional(),
  journey: id.optional(),
  journey_step: id.optional(),
  flag_variant: id.optional(),
  enqueued_at: z.number().int().positive().optional(),
};

export const chatJobSchema = z.object({
  request_id: id,
  user_id: id,
  project_id: id,
  /** The new turn(s): one user message for /v1/chat, the whole list for the OpenAI-compatible API. */
  messages: z.array(chatMessageSchema).min(1).max(500),
  /** When set, stored history is prepended and the new turns are appended to it. */
  conversation_id: id.optional(),
  /** Requested model; the workflow puts its provider first in the fallback chain. */
  model: z.string().min(1).max(128).optional(),
  max_output_tokens: z.number().int().min(1).max(100_000).optional(),
  /**
   * The chain the gateway priced the request's worst case for, each with the output cap the
   * provider is sent; the worker calls exactly these (absent: its own chain and max_output_tokens).
   */
  targets: z.array(cappedTargetSchema).min(1).max(10).optional(),
  ...holdJobFields,
  /** Ground the answer with Google Search context (retrieved through Gemini's googleSearch tool). */
  grounding: chatGroundingSchema.optional(),
  /** The client's Cache-Control and cache namespace (RAG context); absent: the project's defaults. */
  cache: jobCacheSchema.optional(),
  /** The gateway's answer cache covers this request: its repeats are not "a cache would help" evidence. */
  answer_cached: z.boolean().optional(),
  /** Stream deltas to the job's output stream as they arrive. */
  stream: z.boolean().default(false),
  /** The gateway instance reading the stream: its items go to that gateway's reply stream (chatReplyKey). */
  reply_to: z.string().regex(/^[A-Za-z0-9-]{1,64}$/).optional(),
  /** Epoch ms after which nobody waits for the answer. */
  deadline_at: z.number().int().positive(),
  ...jobTags,
});
export type ChatJob = z.infer<typeof chatJobSchema>;

export const attemptSchema = z.object({
  provider: z.string(),
  model: z.string(),
  attempt: z.number().int(),
  outcome: z.enum(['ok', 'error']),
  category: z.enum(ERROR_CATEGORY_VALUES).optional(),
  code: z.string().optional(),
  durationMs: z.number(),
  retryInMs: z.number().optional(),
});

/** A failure as the client sees it: no stack, no internals. */
export const jobErrorSchema = z.object({
  code: z.string(),
  category: z.enum(ERROR_CATEGORY_VALUES),
  message: z.string(),
  suggested_actions: z.array(z.string()),
  http_status: z.number().int(),
  retry_after_ms: z.number().int().optional(),
});
export type JobError = z.infer<typeof jobErrorSchema>;

/** A job whose data fails its schema: answered, not thrown, since a BullMQ retry could never succeed. */
export const INVALID_JOB_ERROR: JobError = {
  code: 'invalid_job',
  category: 'invalid_request',
  message: 'The request could not be processed because it was malformed.',
  suggested_actions: ['Check the request body against the API documentation.'],
  http_status: 400,
};

export const chatJobResultSchema = z.discriminatedUnion('ok', [
  z.object({
    ok: z.literal(true),
    reply: z.string(),
    conversation_id: id.optional(),
    provider: z.string(),
    model: z.string(),
    units: usageUnitsSchema,
    usage_source: z.enum(['provider', 'tokenizer']),
    attempts: z.array(attemptSchema),
    fallback_used: z.boolean(),
    grounding: groundingOutcomeSchema.optional(),
  }),
  z.object({ ok: z.literal(false), error: jobErrorSchema, attempts: z.array(attemptSchema) }),
]);
export type ChatJobResult = z.infer<typeof chatJobResultSchema>;

/** Items of a streaming job's output stream (`chatOutputKey`). */
export type ChatStreamItem =
  | { kind: 'delta'; text: string }
  | { kind: 'done'; result: ChatJobResult };

/** Where a streaming chat job without `reply_to` writes its items (one stream per job: older gateways). */
export function chatOutputKey(namespace: string, jobId: string): string {
  return `${namespace}:chat:out:${jobId}`;
}

/**
 * One gateway instance's reply stream: every streamed answer it relays is written here, each
 * entry naming its job (`job`, id, `item`, JSON), so one blocking read of one key serves all its
 * open streams. Each gateway's stream has a slot of its own.
 */
export function chatReplyKey(namespace: string, replyTo: string): string {
  return `${unitNamespace(namespace, `out:${replyTo}`)}:chat:out`;
}

/** A cost report for one period; without a key, the period that just closed. */
export const reportJobSchema = z.object({
  period: z.enum(['day', 'week', 'month']),
  period_key: z.string().min(1).max(16).optional(),
});
export type ReportJob = z.infer<typeof reportJobSchema>;

/** One job id per period, so a report asked for twice at once is built once. */
export function reportJobId(period: string, periodKey: string): string {
  return `report-${period}-${periodKey}`;
}
