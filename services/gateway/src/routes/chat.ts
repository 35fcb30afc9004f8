import { randomUUID } from 'node:crypto';
import { type Response, Router } from 'express';
import {
  type ChatAssignment,
  chatExperiment,
  chatExperimentTargets,
  type ExposureLog,
  type FlagReader,
  formatUsd,
  groundingKilled,
  price,
  type PriceTable,
  requestFlagContext,
  type UsageUnits,
} from '@tollgate/shared';
import { z } from 'zod';
import { type AnswerCache, cacheDirectiveOf, cacheInfo, jobCacheOf, type OkResult, setCacheHeaders, type StoredAnswer } from '../answer-cache';
import { type Estimator, holdOf, journeyOf } from '../auth/admission';
import { principalOf } from '../auth/middleware';
import type { ChatDispatcher, ChatJobInput } from '../chat-dispatch';
import { sendJobError } from '../errors';
import { decideGrounding, groundingBody, groundingField } from '../grounding';
import { checkModel } from '../models';
import { chatPlan, type SpendOptions } from '../spend';
import type { Guards } from './guards';
import { route } from '../openapi/registry';
import { cacheInfoSchema, cacheRequestHeaders, cacheResponseHeaders, costSchema, groundingBodySchema, usageSchema } from '../openapi/schemas';

const chatBody = z.strictObject({
  message: z.string().min(1).max(32_000),
  conversation_id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, dot, dash or underscore (1-64)').optional(),
  model: z.string().min(1).max(128).optional(),
  grounding: groundingField.optional(),
});

const chatReply = z
  .object({
    reply: z.string(),
    conversation_id: z.string(),
    provider: z.string(),
    model: z.string(),
    usage: usageSchema,
    cost: costSchema.optional(),
    attempts: z.number().int().meta({ description: 'Provider calls made (0 for a cache hit).' }),
    fallback_used: z.boolean(),
    grounding: groundingBodySchema.optional(),
    degraded: z.literal(true).optional(),
    degraded_reason: z.literal('grounding_disabled').optional(),
    cache: cacheInfoSchema,
    request_id: z.string(),
  })
  .meta({ id: 'ChatReply' });

export const openapi = [
  route({
    method: 'post',
    path: '/v1/chat',
    tag: 'Chat',
    summary: 'Chat with the workflow',
    description:
      'One user message, answered through the fallback chain (or the `model` asked for), optionally grounded with Google Search. ' +
      'A `conversation_id` keeps history between turns. Admission holds the worst-case cost on every hard budget before the job runs.',
    guard: 'chat',
    paid: true,
    headers: cacheRequestHeaders,
    body: { content: { 'application/json': chatBody } },
    responses: { 200: { description: 'The answer, what it cost, and how it was served.', headers: cacheResponseHeaders, content: { 'application/json': chatReply } } },
  }),
];

/** What the call cost at today's prices; the ledger's entry is the record, this is the receipt. */
export function costOf(provider: string, model: string, units: UsageUnits, table: PriceTable) {
  try {
    const p = price({ provider, model, units }, { table });
    return { micros: p.amount_micros, usd: formatUsd(p.amount_micros), price_version: p.price_version };
  } catch {
    return undefined;
  }
}

/** The gateway's flag snapshot for chat: the provider experiment and the grounding kill switch. */
export interface ChatFlags {
  reader: FlagReader;
  exposures?: ExposureLog;
}

export function chatRoutes(guards: Guards, dispatcher: ChatDispatcher, spend: SpendOptions, answers?: AnswerCache, flags?: ChatFlags): Router {
  const router = Router();
  const priceTable = spend.priceTable;

  // The body is read once, here, for the worst case admission holds; the route reuses it.
  const estimate: Estimator = (req, res) => {
    const body = chatBody.parse(req.body);
    checkModel(body.model, priceTable, 'chat');
    const conversationId = body.conversation_id ?? randomUUID();
    const messages = [{ role: 'user' as const, content: body.message }];
    // The caller, and so the experiment's variant, is known only after admission: hold for every
    // target a variant may use; the route picks the caller's own below.
    const candidates = body.model || !flags ? undefined : chatExperimentTargets(flags.reader, spend.fallbackChain);
    const plan = chatPlan(spend, {
      messages,
      ...(body.model && { model: body.model }),
      ...(candidates && { chain: candidates }),
      conversation_id: conversationId,
      ...(body.grounding && { grounding: typeof body.grounding === 'object' ? body.grounding : {} }),
    });
    res.locals.chat = { body, conversationId, messages, targets: plan.targets, replan: candidates !== undefined };
    return plan.work;
  };

  router.post('/v1/chat', ...guards.chat(estimate), async (req, res) => {
    const chat = res.locals.chat as {
      body: z.infer<typeof chatBody>;
      conversationId: string;
      messages: ChatJobInput['messages'];
      targets: ChatJobInput['targets'];
      replan: boolean;
    };
    const { body, conversationId, messages } = chat;
    let targets = chat.targets;
    const who = principalOf(res);
    const requestId = res.locals.requestId as string;
    const directive = cacheDirectiveOf(req);
    const context = flags && requestFlagContext(who, { sessionId: conversationId, appName: 'gateway' });
    // The kill switch answers ungrounded (the search hold is given back when the job settles).
    const groundingOff = body.grounding !== undefined && body.grounding !== false && flags !== undefined && groundingKilled(flags.reader, context!);
    const grounding = groundingOff ? undefined : decideGrounding(body.grounding, who, priceTable);
    let assignment: ChatAssignment | undefined;
    if (chat.replan) {
      const picked = pickTargets(spend, messages, chatExperiment(flags!.reader, context!));
      // Only targets the hold covered: the flag may have changed since admission.
      const held = (t: { provider: string; model: string }) => (chat.targets ?? []).some((h) => h.provider === t.provider && h.model === t.model);
      const usable = picked && picked.targets.every(held) ? picked : undefined;
      assignment = usable?.assignment;
      targets = usable?.targets ?? chatPlan(spend, { messages }).targets;
    }
    if (assignment && flags?.exposures) {
      // Beside the request, not before it; a lost exposure must not fail the chat.
      void flags.exposures.record(assignment.flag, assignment.variant, who.user_id, true, { correlation_id: requestId, user_id: who.user_id, project_id: who.project_id }).catch(() => undefined);
    }
    // Everything that shapes the answer; a conversation's stored history does too, and only the worker sees it.
    const shape = {
      api: 'chat',
      model: body.model ?? null,
      message: body.message,
      grounding: grounding ?? null,
      ...(assignment && { experiment: `${assignment.flag}:${assignment.variant}` }),
    };
    const lookup = answers
      ? await answers.lookup(who, directive, shape, body.conversation_id === undefined || 'a conversation turn depends on its stored history')
      : ({ status: 'BYPASS', reason: 'no cache configured' } as const);

    const send = (result: OkResult, hit?: { value: StoredAnswer; age_seconds: number; stored_at: string }) => {
      setCacheHeaders(res, lookup.status === 'HIT' || hit ? 'HIT' : lookup.status, hit);
      res.setHeader('x-tollgate-provider', result.provider);
      const cost = costOf(result.provider, result.model, result.units, priceTable);
      const reply: z.input<typeof chatReply> = {
        reply: result.reply,
        conversation_id: conversationId,
        provider: result.provider,
        model: result.model,
        usage: { ...result.units, source: hit ? 'cache' : result.usage_source },
        // A hit is free; what the answer cost when it was paid for is what it saved.
        cost: hit ? { micros: 0, usd: formatUsd(0), ...(cost && { price_version: cost.price_version }) } : cost,
        attempts: hit ? 0 : result.attempts.length,
        fallback_used: result.fallback_used,
        ...(result.grounding && { grounding: groundingBody(result.grounding, hit !== undefined) }),
        ...(groundingOff && { degraded: true, degraded_reason: 'grounding_disabled' }),
        cache: cacheInfo(hit ? 'HIT' : lookup.status, hit, lookup.status === 'BYPASS' ? lookup.reason : undefined),
        request_id: requestId,
      };
      res.json(reply);
    };

    const run = () =>
      dispatcher.run({
        request_id: requestId,
        route: '/v1/chat',
        ...journeyOf(res),
        user_id: who.user_id,
        project_id: who.project_id,
        messages,
        conversation_id: conversationId,
        ...(body.model && { model: body.model }),
        targets,
        ...holdFields(res),
        ...(grounding && { grounding }),
        cache: jobCacheOf(directive),
        ...(lookup.status !== 'BYPASS' && { answer_cached: true }),
      });
    if (lookup.status === 'BYPASS' || !answers) {
      const result = await run();
      if (!result.ok) return sendJobError(res, result.error);
      return send(result);
    }
    if (lookup.status === 'HIT') {
      await answers.recordHit(lookup.key, lookup.hit, requestId, who, { ...journeyOf(res), conversation_id: conversationId });
      return send(lookup.hit.value.result, lookup.hit);
    }
    const outcome = await answers.compute(lookup, requestId, Date.now() + dispatcher.deadlineMs, run);
    if ('reused' in outcome) {
      await answers.recordHit(lookup.key, outcome.reused, requestId, who, { ...journeyOf(res), conversation_id: conversationId });
      return send(outcome.reused.value.result, outcome.reused);
    }
    if (!outcome.result.ok) return sendJobError(res, outcome.result.error);
    send(outcome.result);
  });

  return router;
}

/** The caller's experiment variant with its targets, priced and capped; undefined when it has none usable. */
function pickTargets(spend: SpendOptions, messages: ChatJobInput['messages'], a: ChatAssignment | undefined) {
  if (!a) return undefined;
  try {
    return { assignment: a, targets: chatPlan(spend, { messages, ...(a.model && { model: a.model }), ...(a.chain && { chain: a.chain }) }).targets };
  } catch {
    return undefined;
  }
}

/**
 * The hold admission made, for the job, which from then on ends it (the worker does, or its
 * expiry); a request that never hands it to a job gives it back when it is answered.
 */
export function holdFields(res: Response): { hold_id?: string; history_max_bytes?: number } {
  const hold = holdOf(res);
  if (!hold?.hold_id) return {};
  hold.handed_off = true;
  return { hold_id: hold.hold_id, history_max_bytes: hold.history_bytes };
}

/** holdFields for a job that sends no history (vision). */
export function holdId(res: Response): { hold_id?: string } {
  const { hold_id } = holdFields(res);
  return hold_id ? { hold_id } : {};
}
