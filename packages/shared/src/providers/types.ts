import type { ProviderModel, ProviderName } from '../config';
import type { UsageUnits } from '../events/catalog';

export type { ProviderName };
/** A provider and the model to ask it for. */
export type Target = ProviderModel;

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ImageInput {
  data: Buffer;
  mimeType: string;
}

export interface CompletionRequest {
  model: string;
  messages: ChatMessage[];
  /** Attached to the last user message (vision). */
  image?: ImageInput;
  maxOutputTokens?: number;
  signal?: AbortSignal;
}

export interface CompletionResult {
  provider: ProviderName;
  model: string;
  text: string;
  units: UsageUnits;
  /** `tokenizer` when the provider sent no usage and we counted ourselves: a call is never priced at $0 for lack of it. */
  usageSource: 'provider' | 'tokenizer';
}

/** One streamed piece: text deltas, then exactly one final item with the usage. */
export type CompletionChunk = { type: 'delta'; text: string } | { type: 'done'; result: CompletionResult };

export interface ProviderClient {
  readonly name: ProviderName;
  complete(request: CompletionRequest): Promise<CompletionResult>;
  stream(request: CompletionRequest): AsyncIterable<CompletionChunk>;
}
