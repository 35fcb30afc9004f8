import { Tiktoken } from 'js-tiktoken/lite';
import o200k from 'js-tiktoken/ranks/o200k_base';
import type { ChatMessage } from './types';

let encoder: Tiktoken | undefined;

/** Token count by the o200k tokenizer: the fallback when a provider reports no usage. */
export function countTokens(text: string): number {
  encoder ??= new Tiktoken(o200k);
  return encoder.encode(text).length;
}

/** OpenAI's chat accounting: 3 tokens of framing per message plus 3 to prime the reply. */
export function countMessageTokens(messages: ChatMessage[]): number {
  return messages.reduce((sum, m) => sum + 3 + countTokens(m.content), 3);
}
