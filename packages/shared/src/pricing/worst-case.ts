import type { Target } from '../providers/types';
import { isExternal, type ModelPrice, type PriceTable, resolveModelPrice, selectPriceVersion } from './price-table';

/**
 * Worst-case cost of one paid request, the amount admission reserves on every hard budget that
 * covers the caller. Everything here rounds up and takes the most expensive target the request
 * may reach, so the amount the ledger later prices can never exceed it (one run of the request).
 */

/** One target of a chat request's chain with the output cap the provider is sent for it. */
export interface CappedTarget extends Target {
  max_output_tokens: number;
}

/** Per target: micros per 1M input tokens, and the fixed worst case of its capped output. */
export interface TargetBound {
  input_per_mtok: number;
  fixed_micros: number;
}

/** Fixed overhead of a chat call beyond the JSON bytes of its messages (reply priming, system framing). */
export const CHAT_INPUT_OVERHEAD_TOKENS = 64;

const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

function ratesOf(table: PriceTable, target: Target, at: Date): ModelPrice | undefined {
  try {
    return resolveModelPrice(selectPriceVersion(table, at), target.provider, target.model).price;
  } catch {
    return undefined;
  }
}

/**
 * Bounds for each priced chat target; a target the table cannot price is dropped (the ledger could
 * not bill it, so it is never called). Output is priced at the dearer of the output and reasoning
 * rates: the cap bounds visible and reasoning tokens together.
 */
export function chatTargetBounds(table: PriceTable, chain: readonly CappedTarget[], at = new Date()): Array<{ target: CappedTarget; bound: TargetBound }> {
  const out: Array<{ target: CappedTarget; bound: TargetBound }> = [];
  for (const target of chain) {
    const p = ratesOf(table, target, at);
    if (!p || p.input_per_mtok === undefined || p.output_per_mtok === undefined) continue;
    const outRate = Math.max(p.output_per_mtok, p.reasoning_per_mtok ?? 0);
    out.push({ target, bound: { input_per_mtok: p.input_per_mtok, fixed_micros: ceilDiv(target.max_output_tokens * outRate, 1_000_000) } });
  }
  return out;
}

/**
 * Tokens are byte sequences (BPE and SentencePiece alike), so the UTF-8 bytes of a message's JSON
 * bound its tokens from above, role and framing included.
 */
export function messageBytes(messages: ReadonlyArray<{ role: string; content: string }>): number {
  let n = 0;
  for (const m of messages) n += Buffer.byteLength(JSON.stringify(m));
  return n;
}

/** The worst case over the bounds for a given input-token count (what the admission script computes, in TS). */
export function chatWorstCase(bounds: readonly TargetBound[], inputTokens: number): number {
  let worst = 0;
  for (const b of bounds) worst = Math.max(worst, ceilDiv(inputTokens * b.input_per_mtok, 1_000_000) + b.fixed_micros);
  return worst;
}

/** The dearest per-image price among the targets a vision request may reach. */
export function perImageWorstCase(table: PriceTable, targets: readonly Target[], images = 1, at = new Date()): number | undefined {
  let worst: number | undefined;
  for (const t of targets) {
    const p = ratesOf(table, t, at)?.per_image;
    if (p !== undefined) worst = Math.max(worst ?? 0, p * images);
  }
  return worst;
}

/** Output cap of the grounding search call (sent to Gemini), and the most context it adds to the answer's input. */
export const GROUNDING_OUTPUT_CAP = 1024;
export const GROUNDING_CONTEXT_MAX_BYTES = 16_384;
/**
 * Search queries a per-query model (Gemini 3) is held for. Google decides how many it runs; a
 * search that runs more is billed in full like a re-run, so this is the one soft edge of the bound.
 */
export const GROUNDING_HELD_QUERIES = 8;

/**
 * Worst case of a grounded chat's search call: the question at the input rate, its capped output,
 * and the search fee (one per grounded prompt, or per query for per-query models). Undefined when
 * the model cannot be priced for search (the route refuses those).
 */
export function groundingWorstCase(table: PriceTable, model: string, questionBytes: number, at = new Date()): number | undefined {
  const p = ratesOf(table, { provider: 'gemini', model }, at);
  if (!p || p.input_per_mtok === undefined || p.output_per_mtok === undefined) return undefined;
  const fee = p.per_grounded_prompt ?? (p.per_search_query !== undefined ? p.per_search_query * GROUNDING_HELD_QUERIES : undefined);
  if (fee === undefined) return undefined;
  const outRate = Math.max(p.output_per_mtok, p.reasoning_per_mtok ?? 0);
  return ceilDiv((questionBytes + CHAT_INPUT_OVERHEAD_TOKENS) * p.input_per_mtok, 1_000_000) + ceilDiv(GROUNDING_OUTPUT_CAP * outRate, 1_000_000) + fee;
}

/** What an external operation is measured in, as `/v1/usage` reports it. */
export interface ExternalUnits {
  calls: number;
  quantity: number;
}

/**
 * The price of an external operation (`provider/name`, exactly as the table keys it) in force at
 * `at`, with the version it comes from; undefined when the table has no such operation, or the
 * key names a model (those are priced only from what Tollgate's own workers report).
 */
export function externalPrice(table: PriceTable, operation: string, at = new Date()): { price: ModelPrice; version: string } | undefined {
  let version;
  try {
    version = selectPriceVersion(table, at);
  } catch {
    return undefined;
  }
  const p = Object.hasOwn(version.models, operation) ? version.models[operation] : undefined;
  return p && isExternal(p) ? { price: p, version: version.version } : undefined;
}

/** The most `units` of an external operation can cost, rounded up: what a usage hold reserves. */
export function externalWorstCase(p: ModelPrice, units: ExternalUnits): number {
  return (p.per_call ?? 0) * units.calls + (p.per_unit ?? 0) * units.quantity + ceilDiv((p.per_1k_units ?? 0) * units.quantity, 1_000);
}

/** `provider/name` of an external operation, split as usage events carry it (provider, model). */
export function splitOperation(operation: string): { provider: string; model: string } {
  const at = operation.indexOf('/');
  return { provider: operation.slice(0, at), model: operation.slice(at + 1) };
}
