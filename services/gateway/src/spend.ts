import {
  type CappedTarget,
  CHAT_INPUT_OVERHEAD_TOKENS,
  GROUNDING_CONTEXT_MAX_BYTES,
  groundingWorstCase,
  chainFor,
  chatTargetBounds,
  type ChatMessage,
  messageBytes,
  perImageWorstCase,
  type PriceTable,
  type Target,
  VISION_TARGETS,
} from '@tollgate/shared';
import type { PaidWork } from './auth/admission';
import { ApiError } from './errors';
import { DEFAULT_GROUNDING_MODEL } from './grounding';

/** How the gateway bounds what a chat may cost: the chain it may reach and each model's output cap. */
export interface SpendOptions {
  priceTable: PriceTable;
  fallbackChain: readonly Target[];
  /** Output cap sent to the provider when the client sets none. */
  defaultMaxOutputTokens: number;
  maxOutputTokensByModel?: Readonly<Record<string, number>>;
}

export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

/**
 * The targets a chat may reach, each with the output cap the provider will be sent: the client's
 * `max_tokens` when given, else the model's default. Only priced targets remain: a call the ledger
 * could not price would be a call nobody pays for.
 */
export function chatPlan(
  opts: SpendOptions,
  req: { messages: readonly ChatMessage[]; model?: string; max_output_tokens?: number; conversation_id?: string; grounding?: { model?: string }; chain?: readonly Target[] },
): { work: PaidWork; targets: CappedTarget[] } {
  // `chain`: the targets in place of the configured chain (a flag experiment's variant or all of them).
  const capped = chainFor(req.model, req.chain ?? opts.fallbackChain).map((t) => ({
    ...t,
    max_output_tokens: req.max_output_tokens ?? opts.maxOutputTokensByModel?.[t.model] ?? opts.defaultMaxOutputTokens,
  }));
  const priced = chatTargetBounds(opts.priceTable, capped);
  if (priced.length === 0) throw new ApiError('provider_unavailable', 'No priced provider can serve this chat.');
  // A grounded chat also pays its search call, and the context it returns is part of the answer's input.
  let search = 0;
  if (req.grounding) {
    const question = [...req.messages].reverse().find((m) => m.role === 'user')?.content ?? '';
    const model = req.grounding.model ?? DEFAULT_GROUNDING_MODEL;
    const worst = groundingWorstCase(opts.priceTable, model, Buffer.byteLength(question));
    if (worst === undefined) throw new ApiError('invalid_request', `Grounding model "${model}" has no Google Search price, so it cannot ground.`);
    search = worst;
  }
  return {
    targets: priced.map((p) => p.target),
    work: {
      input_tokens: messageBytes(req.messages) + CHAT_INPUT_OVERHEAD_TOKENS + (req.grounding ? GROUNDING_CONTEXT_MAX_BYTES : 0),
      bounds: priced.map((p) => ({ ...p.bound, fixed_micros: p.bound.fixed_micros + search })),
      ...(req.conversation_id && { conversation_id: req.conversation_id }),
    },
  };
}

/**
 * A vision request is held before its body is read (an unauthenticated client never makes the
 * gateway buffer an upload), so it holds the dearest image any quality may reach.
 */
export function visionWork(table: PriceTable): PaidWork {
  const worst = perImageWorstCase(table, Object.values(VISION_TARGETS)) ?? 0;
  return { input_tokens: 0, bounds: [{ input_per_mtok: 0, fixed_micros: worst }] };
}
