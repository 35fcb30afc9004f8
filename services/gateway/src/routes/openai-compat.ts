import { Router, type Response } from 'express';
import type { ChatJobResult, ChatMessage, ChatStreamItem, PriceTable, UsageUnits } from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import type { ChatDispatcher, ChatJobInput } from '../chat-dispatch';
import { ApiError, sendJobError } from '../errors';
import { checkModel } from '../models';
import { costOf } from './chat';
import type { Guards } from './guards';

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
});

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

export function openAiRoutes(guards: Guards, dispatcher: ChatDispatcher, priceTable: PriceTable): Router {
  const router = Router();

  router.post('/v1/chat/completions', ...guards.chat, async (req, res) => {
    const body = completionBody.parse(req.body);
    checkModel(body.model, priceTable, 'chat');
    const who = principalOf(res);
    const requestId = res.locals.requestId as string;
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    const input: ChatJobInput = {
      request_id: requestId,
      route: '/v1/chat/completions',
      user_id: who.user_id,
      project_id: who.project_id,
      messages: toMessages(body),
      model: body.model,
      ...(maxTokens && { max_output_tokens: maxTokens }),
    };
    const id = `chatcmpl-${requestId}`;
    const created = Math.floor(Date.now() / 1000);

    if (!body.stream) {
      const result = await dispatcher.run(input);
      if (!result.ok) return sendJobError(res, result.error);
      res.setHeader('x-tollgate-provider', result.provider);
      res.json({
        id,
        object: 'chat.completion',
        created,
        model: result.model,
        choices: [{ index: 0, message: { role: 'assistant', content: result.reply, refusal: null }, finish_reason: 'stop', logprobs: null }],
        usage: openAiUsage(result.units),
        tollgate: tollgateExtras(result, requestId, priceTable),
      });
      return;
    }

    await streamCompletion(res, dispatcher.stream(input), {
      id,
      created,
      model: body.model,
      includeUsage: Boolean(body.stream_options?.include_usage),
      requestId,
      priceTable,
    });
  });

  return router;
}

function tollgateExtras(result: Ok, requestId: string, table: PriceTable) {
  return {
    request_id: requestId,
    provider: result.provider,
    fallback_used: result.fallback_used,
    attempts: result.attempts.length,
    usage_source: result.usage_source,
    cost: costOf(result.provider, result.model, result.units, table),
  };
}

/**
 * Relays the worker's deltas as OpenAI SSE chunks. Headers wait for the first item, so a request
 * that fails before any text still gets a proper HTTP error status.
 */
async function streamCompletion(
  res: Response,
  items: AsyncGenerator<ChatStreamItem>,
  o: { id: string; created: number; model: string; includeUsage: boolean; requestId: string; priceTable: PriceTable },
): Promise<void> {
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id: o.id, object: 'chat.completion.chunk', created: o.created, model: o.model, choices, ...extra })}\n\n`;
  let open = false;
  const openStream = () => {
    if (open) return;
    open = true;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }]));
  };

  for await (const item of items) {
    if (item.kind === 'delta') {
      openStream();
      res.write(chunk([{ index: 0, delta: { content: item.text }, finish_reason: null, logprobs: null }]));
      continue;
    }
    const result = item.result;
    if (!result.ok) {
      if (!open) return sendJobError(res, result.error);
      // Mid-stream failure: the status is already sent, so the error travels in the stream.
      res.write(`data: ${JSON.stringify({ error: { ...result.error, request_id: o.requestId } })}\n\n`);
      res.end();
      return;
    }
    openStream();
    res.write(chunk([{ index: 0, delta: {}, finish_reason: 'stop', logprobs: null }]));
    if (o.includeUsage) res.write(chunk([], { usage: openAiUsage(result.units), tollgate: tollgateExtras(result, o.requestId, o.priceTable) }));
    res.write('data: [DONE]\n\n');
    res.end();
    return;
  }
  throw new ApiError('provider_unavailable', 'The chat stream ended without an answer. Please try again.');
}
