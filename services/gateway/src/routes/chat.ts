import { randomUUID } from 'node:crypto';
import { type Response, Router } from 'express';
import { formatUsd, price, type PriceTable, type UsageUnits } from '@tollgate/shared';
import { z } from 'zod';
import { type Estimator, holdOf } from '../auth/admission';
import { principalOf } from '../auth/middleware';
import type { ChatDispatcher, ChatJobInput } from '../chat-dispatch';
import { sendJobError } from '../errors';
import { checkModel } from '../models';
import { chatPlan, type SpendOptions } from '../spend';
import type { Guards } from './guards';

const chatBody = z.strictObject({
  message: z.string().min(1).max(32_000),
  conversation_id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, dot, dash or underscore (1-64)').optional(),
  model: z.string().min(1).max(128).optional(),
});

/** What the call cost at today's prices; the ledger's entry is the record, this is the receipt. */
export function costOf(provider: string, model: string, units: UsageUnits, table: PriceTable) {
  try {
    const p = price({ provider, model, units }, { table });
    return { micros: p.amount_micros, usd: formatUsd(p.amount_micros), price_version: p.price_version };
  } catch {
    return undefined;
  }
}

export function chatRoutes(guards: Guards, dispatcher: ChatDispatcher, spend: SpendOptions): Router {
  const router = Router();
  const priceTable = spend.priceTable;

  // The body is read once, here, for the worst case that admission holds; the route reuses it.
  const estimate: Estimator = (req, res) => {
    const body = chatBody.parse(req.body);
    checkModel(body.model, priceTable, 'chat');
    const conversationId = body.conversation_id ?? randomUUID();
    const messages = [{ role: 'user' as const, content: body.message }];
    const plan = chatPlan(spend, { messages, ...(body.model && { model: body.model }), conversation_id: conversationId });
    res.locals.chat = { body, conversationId, messages, targets: plan.targets };
    return plan.work;
  };

  router.post('/v1/chat', ...guards.chat(estimate), async (_req, res) => {
    const { body, conversationId, messages, targets } = res.locals.chat as {
      body: z.infer<typeof chatBody>;
      conversationId: string;
      messages: ChatJobInput['messages'];
      targets: ChatJobInput['targets'];
    };
    const who = principalOf(res);
    const result = await dispatcher.run({
      request_id: res.locals.requestId as string,
      user_id: who.user_id,
      project_id: who.project_id,
      messages,
      conversation_id: conversationId,
      ...(body.model && { model: body.model }),
      targets,
      ...holdFields(res),
    });
    if (!result.ok) return sendJobError(res, result.error);
    res.setHeader('x-tollgate-provider', result.provider);
    res.json({
      reply: result.reply,
      conversation_id: conversationId,
      provider: result.provider,
      model: result.model,
      usage: { ...result.units, source: result.usage_source },
      cost: costOf(result.provider, result.model, result.units, priceTable),
      attempts: result.attempts.length,
      fallback_used: result.fallback_used,
      request_id: res.locals.requestId,
    });
  });

  return router;
}

/** The hold admission made, for the job: the worker ends it and sends no more history than it counted. */
export function holdFields(res: Response): { hold_id?: string; history_max_bytes?: number } {
  const hold = holdOf(res);
  if (!hold?.hold_id) return {};
  return { hold_id: hold.hold_id, history_max_bytes: hold.history_bytes };
}
