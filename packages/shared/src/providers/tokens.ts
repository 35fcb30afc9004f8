import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite';
import type { ChatMessage } from './types';

let encoder: Tiktoken | undefined;

/**
 * The o200k tokenizer, loaded on first use: its ranks cost about 20 MB of memory, which services
 * that never count tokens (gateway, cost-ledger, alerting) should not pay.
 */
function o200k(): Tiktoken {
  if (!encoder) {
    const { Tiktoken: Encoder } = require('js-tiktoken/lite') as typeof import('js-tiktoken/lite');
    // The CommonJS build is the ranks object itself; an ES module build would hold it as default.
    const ranks = require('js-tiktoken/ranks/o200k_base') as TiktokenBPE | { default: TiktokenBPE };
    encoder = new Encoder('default' in ranks ? ranks.default : ranks);
  }
  return encoder;
}

/** Token count by the o200k tokenizer: the fallback when a provider reports no usage. */
export function countTokens(text: string): number {
  return o200k().encode(text).length;
}

/** OpenAI's chat accounting: 3 tokens of framing per message plus 3 to prime the reply. */
export function countMessageTokens(messages: ChatMessage[]): number {
  return messages.reduce((sum, m) => sum + 3 + countTokens(m.content), 3);
}
