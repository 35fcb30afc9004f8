import { Router, type Response } from 'express';
import { type Cached, type CacheStatus, type ChatJobResult, type ChatMessage, type ChatStreamItem, formatUsd, groundingKilled, type PriceTable, requestFlagContext, type UsageUnits } from '@tollgate/shared';
import { z } from 'zod';
import { type AnswerCache, cacheDirectiveOf, cacheInfo, jobCacheOf, type Lookup, setCacheHeaders, type StoredAnswer } from '../answer-cache';
import { type Estimator, journeyOf } from '../auth/admission';
import { type Principal, principalOf } from '../auth/middleware';
import type { ChatDispatcher, ChatJobInput } from '../chat-dispatch';
import { ApiError, sendJobError } from '../errors';
import { decideGrounding, groundingBody, webSearchOptionsField } from '../grounding';
import { checkModel } from '../models';
import { chatPlan, type SpendOptions } from '../spend';
import { type ChatFlags, costOf, holdFields } from './chat';
import type { Guards } from './guards';
import { route } from '../openapi/registry';
import { cacheInfoSchema, cacheRequestHeaders, cacheResponseHeaders, costSchema, groundingBodySchema } from '../openapi/schemas';

const textPart = z.object({ type: z.literal('text'), text: z.string().max(200_000) });
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string().max(200_000), z.array(textPart).min(1).max(100)]),
  name: z.string().max(64).optional(),
});

/**
 * The OpenAI Chat Completions request. Known fields are checked; sampling options the SDKs send
 * (temperature, top_p, ...) are accepted and left to the provider defaults.
 */
const completionBody = z.looseObject({
  model: z.string().min(1).max(128),
  messages: z.array(message).min(1).max(500),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  max_tokens: z.number().int().min(1).max(100_000).nullish(),
  max_completion_tokens: z.number().int().min(1).max(100_000).nullish(),
  n: z.literal(1).nullish(),
  /** OpenAI's search option: the answer is grounded with Google Search. */
  web_search_options: webSearchOptionsField.nullish(),
});

const openAiUsageSchema = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int().meta({ description: 'Output tokens, reasoning tokens included (as OpenAI counts them).' }),
  total_tokens: z.number().int(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int().optional() }).optional(),
  completion_tokens_details: z.object({ reasoning_tokens: z.number().int().optional() }).optional(),
});

/** Tollgate's additions to OpenAI's body, under one key an OpenAI client ignores. */
const tollgateExtrasSchema = z
  .object({
    request_id: z.string(),
    provider: z.string(),
    fallback_used: z.boolean(),
    attempts: z.number().int(),
    usage_source: z.enum(['provider', 'tokenizer', 'cache']),
    cost: costSchema.optional(),
    grounding: groundingBodySchema.optional(),
    cache: cacheInfoSchema,
  })
  .meta({ id: 'TollgateExtras' });

/** OpenAI's `chat.completion`; the document allows more fields than these (OpenAI's own answers have them). */
export const completionReply = z
  .object({
    id: z.string(),
    object: z.literal('chat.completion'),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(
      z.object({
        index: z.number().int(),
        message: z.object({ role: z.literal('assistant'), content: z.string().nullable(), refusal: z.string().nullable().optional() }),
        finish_reason: z.enum(['stop', 'length', 'tool_calls', 'content_filter', 'function_call']),
        logprobs: z.unknown().nullable().optional(),
      }),
    ),
    usage: openAiUsageSchema.optional(),
    tollgate: tollgateExtrasSchema.optional(),
  })
  .meta({ id: 'ChatCompletion' });

/** One `data:` line of a streamed completion (then `data: [DONE]`). */
export const completionChunk = z
  .object({
    id: z.string(),
    object: z.literal('chat.completion.chunk'),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(
      z.object({
        index: z.number().int(),
        delta: z.object({ role: z.literal('assistant').optional(), content: z.string().nullable().optional() }),
        finish_reason: z.enum(['stop', 'length', 'tool_calls', 'content_filter', 'function_call']).nullable(),
        logprobs: z.unknown().nullable().optional(),
      }),
    ),
    usage: openAiUsageSchema.nullable().optional(),
    tollgate: tollgateExtrasSchema.optional(),
  })
  .meta({ id: 'ChatCompletionChunk', unusedIO: 'output' });

export const openapi = [
  route({
    method: 'post',
    path: '/v1/chat/completions',
    tag: 'OpenAI-compatible',
    summary: 'Create a chat completion (OpenAI Chat Completions)',
    description:
      'What the stock `openai` SDK sends with `baseURL: <gateway>/v1`. Sampling options are accepted and left to provider defaults. ' +
      'With `stream: true` the answer is `text/event-stream`: one `ChatCompletionChunk` per `data:` line, the usage chunk when ' +
      '`stream_options.include_usage` is set, then `data: [DONE]`; a failure after the first chunk arrives as `data: {"error": {...}}` (the `Error` shape). ' +
      '`web_search_options` grounds the answer with Google Search. Tollgate\'s own figures (cost in integer micro-dollars, cache) are under `tollgate`.',
    guard: 'chat',
    paid: true,
    headers: cacheRequestHeaders,
    body: { content: { 'application/json': completionBody } },
    components: { ChatCompletionChunk: completionChunk },
    responses: {
      200: {
        description: 'The completion (JSON), or its stream of chunks (`stream: true`).',
        headers: cacheResponseHeaders.extend({ 'x-tollgate-degraded': z.literal('grounding_disabled').optional().meta({ description: 'Grounding was asked for but is switched off: answered without a search.' }) }),
        content: {
          'application/json': completionReply,
          'text/event-stream': z.string().meta({ description: 'Server-sent events: `data: <ChatCompletionChunk JSON>` lines, then `data: [DONE]`.', 'x-event-data': { $ref: '#/components/schemas/ChatCompletionChunk' } }),
        },
      },
    },
  }),
];

/** Fields that change how the answer is delivered, not what it says; everything else is in the cache key. */
function answerShape(body: z.infer<typeof completionBody>): unknown {
  const { stream: _s, stream_options: _o, user: _u, metadata: _m, store: _st, ...shape } = body as Record<string, unknown>;
  return { api: 'chat.completions', ...shape };
}

function toMessages(body: z.infer<typeof completionBody>): ChatMessage[] {
  return body.messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('\n'),
  }));
}

function openAiUsage(units: UsageUnits) {
  const input = units.input_tokens ?? 0;
  const reasoning = units.reasoning_tokens ?? 0;
  const output = (units.output_tokens ?? 0) + reasoning;
  return {
    prompt_tokens: input,
    completion_tokens: output,
    total_tokens: input + output,
    prompt_tokens_details: { cached_tokens: units.cached_input_tokens ?? 0 },
    completion_tokens_details: { reasoning_tokens: reasoning },
  };
}

type Ok = Extract<ChatJobResult, { ok: true }>;

export function openAiRoutes(guards: Guards, dispatcher: ChatDispatcher, spend: SpendOptions, answers?: AnswerCache, flags?: ChatFlags): Router {
  const router = Router();
  const priceTable = spend.priceTable;

  // The body is read once, here, for the worst case admission holds; the route reuses it.
  const estimate: Estimator = (req, res) => {
    const body = completionBody.parse(req.body);
    checkModel(body.model, priceTable, 'chat');
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
    const messages = toMessages(body);
    const plan = chatPlan(spend, {
      messages,
      model: body.model,
      ...(maxTokens && { max_output_tokens: maxTokens }),
      ...(body.web_search_options && { grounding: {} }),
    });
    res.locals.completion = { body, messages, targets: plan.targets };
    return plan.work;
  };

  router.post('/v1/chat/completions', ...guards.chat(estimate), async (req, res) => {
    const { body, messages, targets } = res.locals.completion as { body: z.infer<typeof completionBody>; messages: ChatMessage[]; targets: ChatJobInput['targets'] };
    const who = principalOf(res);
    const requestId = res.locals.requestId as string;
    const directive = cacheDirectiveOf(req);
    // The grounding kill switch: answered without a search, said in a header (the body is OpenAI's), cached apart.
    const groundingOff = body.web_search_options !== undefined && flags !== undefined && groundingKilled(flags.reader, requestFlagContext(who, { appName: 'gateway' }));
    if (groundingOff) res.setHeader('x-tollgate-degraded', 'grounding_disabled');
    const grounding = groundingOff ? undefined : decideGrounding(body.web_search_options ? 'web_search_options' : undefined, who, priceTable);
    const shape = groundingOff ? { ...(answerShape(body) as Record<string, unknown>), grounding_disabled: true } : answerShape(body);
    const lookup: Lookup = answers ? await answers.lookup(who, directive, shape, true) : { status: 'BYPASS', reason: 'no cache configured' };
    const input: ChatJobInput = {
      request_id: requestId,
      route: '/v1/chat/completions',
        ...journeyOf(res),
      user_id: who.user_id,
      project_id: who.project_id,
      messages,
      model: body.model,
      targets,
      ...holdFields(res),
      ...(grounding && { grounding }),
      cache: jobCacheOf(directive),
      ...(lookup.status !== 'BYPASS' && { answer_cached: true }),
    };
    const id = `chatcmpl-${requestId}`;
    const created = Math.floor(Date.now() / 1000);
    const reason = lookup.status === 'BYPASS' ? lookup.reason : undefined;
    const o = { id, created, model: body.model, includeUsage: Boolean(body.stream_options?.include_usage), requestId, priceTable, reason };

    if (lookup.status === 'HIT') {
      await answers?.recordHit(lookup.key, lookup.hit, requestId, who, journeyOf(res));
      return body.stream ? replayCompletion(res, lookup.hit, o) : sendCompletion(res, lookup.hit.value.result, 'HIT', o, lookup.hit);
    }

    if (!body.stream) {
      let result: ChatJobResult;
      if (answers && (lookup.status === 'MISS' || lookup.status === 'REFRESH')) {
        const outcome = await answers.compute(lookup, requestId, Date.now() + dispatcher.deadlineMs, () => dispatcher.run(input));
        if ('reused' in outcome) {
          await answers.recordHit(lookup.key, outcome.reused, requestId, who, journeyOf(res));
          return sendCompletion(res, outcome.reused.value.result, 'HIT', o, outcome.reused);
        }
        result = outcome.result;
      } else {
        result = await dispatcher.run(input);
      }
      if (!result.ok) return sendJobError(res, result.error);
      return sendCompletion(res, result, lookup.status, o);
    }

    if (!answers || lookup.status === 'BYPASS') {
      setCacheHeaders(res, 'BYPASS');
      return streamCompletion(res, dispatcher.stream(input), { ...o, status: 'BYPASS' });
    }
    await streamThroughCache(res, answers, lookup, who, () => dispatcher.stream(input), dispatcher.deadlineMs, o);
  });

  return router;
}

interface CompletionOptions {
  id: string;
  created: number;
  model: string;
  includeUsage: boolean;
  requestId: string;
  priceTable: PriceTable;
  /** Why the cache was not used, when it was not. */
  reason?: string;
}

function tollgateExtras(result: Ok, requestId: string, table: PriceTable, status: CacheStatus, hit?: Cached<StoredAnswer>, reason?: string) {
  const cost = costOf(result.provider, result.model, result.units, table);
  return {
    request_id: requestId,
    provider: result.provider,
    fallback_used: result.fallback_used,
    attempts: hit ? 0 : result.attempts.length,
    usage_source: hit ? ('cache' as const) : result.usage_source,
    cost: hit ? { micros: 0, usd: formatUsd(0), ...(cost && { price_version: cost.price_version }) } : cost,
    ...(result.grounding && { grounding: groundingBody(result.grounding, hit !== undefined) }),
    cache: cacheInfo(status, hit, reason),
  };
}

function sendCompletion(res: Response, result: Ok, status: CacheStatus, o: CompletionOptions, hit?: Cached<StoredAnswer>): void {
  setCacheHeaders(res, status, hit);
  res.setHeader('x-tollgate-provider', result.provider);
  const reply: z.input<typeof completionReply> = {
    id: o.id,
    object: 'chat.completion',
    created: o.created,
    model: result.model,
    choices: [{ index: 0, message: { role: 'assistant', content: result.reply, refusal: null }, finish_reason: 'stop', logprobs: null }],
    usage: openAiUsage(result.units),
    tollgate: tollgateExtras(result, o.requestId, o.priceTable, status, hit, o.reason),
  };
  res.json(reply);
}

const sseHeaders = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' };

/**
 * A stored answer served as the stream the client asked for: the same chunks a live stream
 * sends (role, content pieces, finish, usage when asked, [DONE]).
 */
function replayCompletion(res: Response, hit: Cached<StoredAnswer>, o: CompletionOptions): void {
  const result = hit.value.result;
  setCacheHeaders(res, 'HIT', hit);
  res.setHeader('x-tollgate-provider', result.provider);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id: o.id, object: 'chat.completion.chunk', created: o.created, model: result.model, choices, ...extra })}\n\n`;
  res.writeHead(200, sseHeaders);
  let out = chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }]);
  for (const piece of result.reply.match(/\s*\S+(?:\s+\S+){0,2}\s*/g) ?? []) {
    out += chunk([{ index: 0, delta: { content: piece }, finish_reason: null, logprobs: null }]);
  }
  out += chunk([{ index: 0, delta: {}, finish_reason: 'stop', logprobs: null }]);
  if (o.includeUsage) out += chunk([], { usage: openAiUsage(result.units), tollgate: tollgateExtras(result, o.requestId, o.priceTable, 'HIT', hit) });
  res.end(`${out}data: [DONE]\n\n`);
}

/**
 * A cacheable stream: the request that claims the key streams live and stores the complete
 * answer; one that finds the key claimed waits for that answer and replays it (paying nothing),
 * or streams live itself if the other failed.
 */
async function streamThroughCache(
  res: Response,
  answers: AnswerCache,
  lookup: Extract<Lookup, { status: 'MISS' | 'REFRESH' }>,
  who: Principal,
  live: () => AsyncGenerator<ChatStreamItem>,
  deadlineMs: number,
  o: CompletionOptions,
): Promise<void> {
  const outcome = await answers.compute(lookup, o.requestId, Date.now() + deadlineMs, async () => {
    setCacheHeaders(res, lookup.status);
    let final: ChatJobResult | undefined;
    await streamCompletion(res, live(), { ...o, status: lookup.status, onDone: (r) => (final = r) });
    // compute() stores a successful result; the stream is already sent by then.
    return final ?? { ok: false, attempts: [], error: { code: 'stream_incomplete', category: 'provider_unavailable', message: 'The stream ended without an answer.', suggested_actions: [], http_status: 502 } };
  });
  if ('reused' in outcome) {
    await answers.recordHit(lookup.key, outcome.reused, o.requestId, who, journeyOf(res));
    replayCompletion(res, outcome.reused, o);
  }
}

/**
 * Relays the worker's deltas as OpenAI SSE chunks. Headers wait for the first item, so a request
 * that fails before any text still gets a proper HTTP error status.
 */
async function streamCompletion(
  res: Response,
  items: AsyncGenerator<ChatStreamItem>,
  o: CompletionOptions & { status: CacheStatus; onDone?: (result: ChatJobResult) => void },
): Promise<void> {
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id: o.id, object: 'chat.completion.chunk', created: o.created, model: o.model, choices, ...extra })}\n\n`;
  let open = false;
  const openStream = () => {
    if (open) return;
    open = true;
    res.writeHead(200, sseHeaders);
    res.write(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }]));
  };

  for await (const item of items) {
    if (item.kind === 'delta') {
      openStream();
      res.write(chunk([{ index: 0, delta: { content: item.text }, finish_reason: null, logprobs: null }]));
      continue;
    }
    const result = item.result;
    o.onDone?.(result);
    if (!result.ok) {
      if (!open) return sendJobError(res, result.error);
      // Mid-stream failure: the status is already sent, so the error travels in the stream.
      res.write(`data: ${JSON.stringify({ error: { ...result.error, request_id: o.requestId } })}\n\n`);
      res.end();
      return;
    }
    openStream();
    res.write(chunk([{ index: 0, delta: {}, finish_reason: 'stop', logprobs: null }]));
    if (o.includeUsage) res.write(chunk([], { usage: openAiUsage(result.units), tollgate: tollgateExtras(result, o.requestId, o.priceTable, o.status, undefined, o.reason) }));
    res.write('data: [DONE]\n\n');
    res.end();
    return;
  }
  throw new ApiError('provider_unavailable', 'The chat stream ended without an answer. Please try again.');
}
