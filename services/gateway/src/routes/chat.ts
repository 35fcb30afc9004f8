import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { formatUsd, price, type PriceTable, type UsageUnits } from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import type { ChatDispatcher } from '../chat-dispatch';
import { sendJobError } from '../errors';
import { checkModel } from '../models';
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

export function chatRoutes(guards: Guards, dispatcher: ChatDispatcher, priceTable: PriceTable): Router {
  const router = Router();

  router.post('/v1/chat', ...guards.chat, async (req, res) => {
    const body = chatBody.parse(req.body);
    checkModel(body.model, priceTable, 'chat');
    const who = principalOf(res);
    const conversationId = body.conversation_id ?? randomUUID();
    const result = await dispatcher.run({
      request_id: res.locals.requestId as string,
      route: '/v1/chat',
      user_id: who.user_id,
      project_id: who.project_id,
      messages: [{ role: 'user', content: body.message }],
      conversation_id: conversationId,
      ...(body.model && { model: body.model }),
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
