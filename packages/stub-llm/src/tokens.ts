import { Tiktoken } from 'js-tiktoken/lite';
import o200kBase from 'js-tiktoken/ranks/o200k_base';

/** What OpenAI bills a low-detail image; the stub uses it for every OpenAI-wire image. */
export const OPENAI_IMAGE_TOKENS = 85;
/** What Gemini bills an image up to 384x384; the stub uses it for every inline image. */
export const GEMINI_IMAGE_TOKENS = 258;
/** OpenAI's documented chat overhead: 3 tokens per message, 3 more to prime the reply. */
export const OPENAI_TOKENS_PER_MESSAGE = 3;
export const OPENAI_REPLY_PRIMING_TOKENS = 3;

let encoder: Tiktoken | undefined;

// Building the o200k encoder takes ~1 s, so it happens once, on first use or warmUp().
function getEncoder(): Tiktoken {
  encoder ??= new Tiktoken(o200kBase);
  return encoder;
}

export function warmUpTokenizer(): void {
  getEncoder();
}

// Benchmarks repeat the same prompts; BPE costs ~60 µs per short text, a Map hit almost nothing.
const CACHE_LIMIT = 20_000;
const cache = new Map<string, number>();

/** Number of o200k_base tokens in `text` (gpt-4o / o-series tokenizer). */
export function countTokens(text: string): number {
  if (text.length === 0) return 0;
  const hit = cache.get(text);
  if (hit !== undefined) return hit;
  const n = getEncoder().encode(text).length;
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(text, n);
  return n;
}

/** The first `maxTokens` tokens of `text`, decoded back to a string. */
export function truncateToTokens(text: string, maxTokens: number): string {
  const enc = getEncoder();
  return enc.decode(enc.encode(text).slice(0, Math.max(0, maxTokens)));
}
