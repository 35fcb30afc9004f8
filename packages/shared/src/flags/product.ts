import { z } from 'zod';
import { PROVIDER_NAMES, type ProviderName } from '../config';
import { chainFor } from '../providers/routing';
import type { Target } from '../providers/types';
import type { FlagContext } from './engine';
import type { FlagReader } from './snapshot';

/**
 * The flags Tollgate itself obeys. Kill switches are "on = killed": a flag that is missing, off or
 * unreadable leaves the feature running, so deleting a kill switch can never break the product.
 */
export const PRODUCT_FLAGS = {
  /** On: vision `high` requests are served as `standard` and marked `degraded`. */
  visionHighKill: 'tollgate.kill.vision-high',
  /** On: grounded chat answers without grounding (no search is bought). */
  groundingKill: 'tollgate.kill.grounding',
  /** Experiment: a variant's payload picks the chat model or fallback chain (see `chatExperiment`). */
  chatProviderExperiment: 'tollgate.experiment.chat-provider',
} as const;

/** The Unleash context of one request: the caller is the user, the project is a property. */
export function requestFlagContext(r: { user_id: string; project_id: string }, extra: Omit<FlagContext, 'userId'> = {}): FlagContext {
  return { ...extra, userId: r.user_id, properties: { ...extra.properties, projectId: r.project_id } };
}

export function visionHighKilled(flags: FlagReader, context: FlagContext): boolean {
  return flags.evaluate(PRODUCT_FLAGS.visionHighKill, context).enabled;
}

/** For grounded chat: true means skip the search and answer ungrounded. */
export function groundingKilled(flags: FlagReader, context: FlagContext): boolean {
  return flags.evaluate(PRODUCT_FLAGS.groundingKill, context).enabled;
}

const targetText = z.string().regex(/^[a-z]+:[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'provider:model');
/** A chat experiment variant's JSON payload: a whole fallback chain, or one model put first. */
export const chatVariantPayloadSchema = z.union([
  z.strictObject({ chain: z.array(targetText).min(1).max(10) }),
  z.strictObject({ model: z.string().min(1).max(128) }),
]);

export interface ChatAssignment {
  flag: string;
  variant: string;
  /** The chain to use; `undefined` keeps the configured one (a control variant with no payload). */
  chain?: Target[];
  model?: string;
}

const parsed = new Map<string, { chain?: Target[]; model?: string } | null>();

function parsePayload(value: string): { chain?: Target[]; model?: string } | null {
  let hit = parsed.get(value);
  if (hit !== undefined) return hit;
  hit = null;
  try {
    const p = chatVariantPayloadSchema.parse(JSON.parse(value));
    if ('model' in p) hit = { model: p.model };
    else {
      const chain = p.chain.map((t) => {
        const i = t.indexOf(':');
        return { provider: t.slice(0, i) as ProviderName, model: t.slice(i + 1) };
      });
      hit = chain.every((t) => (PROVIDER_NAMES as readonly string[]).includes(t.provider)) ? { chain } : null;
    }
  } catch {
    hit = null;
  }
  if (parsed.size > 1000) parsed.clear();
  parsed.set(value, hit);
  return hit;
}

/**
 * The chat experiment's assignment for a request, or undefined when the experiment is off, the
 * subject is outside it, or the variant's payload is unusable (then the configured chain stands).
 */
export function chatExperiment(flags: FlagReader, context: FlagContext): ChatAssignment | undefined {
  const r = flags.evaluate(PRODUCT_FLAGS.chatProviderExperiment, context);
  if (!r.enabled || !r.variant.enabled) return undefined;
  const base = { flag: PRODUCT_FLAGS.chatProviderExperiment, variant: r.variant.name };
  const p = r.variant.payload;
  if (!p) return base;
  if (p.type !== 'json') return undefined;
  const choice = parsePayload(p.value);
  return choice ? { ...base, ...choice } : undefined;
}

/**
 * Every target the chat experiment may send a request to, the configured chain first: what a
 * budget hold must cover before the caller (and so the variant) is known. Undefined when the
 * experiment is off or absent.
 */
export function chatExperimentTargets(flags: FlagReader, fallbackChain: readonly Target[]): Target[] | undefined {
  const f = flags.definition(PRODUCT_FLAGS.chatProviderExperiment);
  if (!f?.enabled) return undefined;
  const out: Target[] = [...fallbackChain];
  for (const v of [...f.variants, ...f.strategies.flatMap((s) => s.variants ?? [])]) {
    if (v.payload?.type !== 'json') continue;
    const choice = parsePayload(v.payload.value);
    if (!choice) continue;
    for (const t of choice.chain ?? chainFor(choice.model, fallbackChain)) {
      if (!out.some((o) => o.provider === t.provider && o.model === t.model)) out.push(t);
    }
  }
  return out;
}
