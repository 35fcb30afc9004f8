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
  /** Ground the answer with Google Search (Gemini's googleSearch tool); other providers refuse it. */
  grounding?: GroundingRequest;
  signal?: AbortSignal;
}

export interface GroundingRequest {
  /** Only pages from this window (Gemini API's timeRangeFilter); ISO date-times. */
  timeRange?: { start: string; end: string };
}

/** What a grounded call searched and cited (Gemini's groundingMetadata, reduced). */
export interface GroundingResult {
  /** Unique non-empty queries, in the order the model ran them. */
  queries: string[];
  sources: Array<{ title: string; uri: string }>;
  /** Answer segments and the sources (indexes into `sources`) that support them. */
  supports: Array<{ text: string; start: number; end: number; sources: number[] }>;
  /** The search-suggestion HTML Google requires to be shown beside a grounded answer; absent when nothing was searched. */
  entryPointHtml?: string;
}

export interface CompletionResult {
  provider: ProviderName;
  model: string;
  text: string;
  units: UsageUnits;
  /** `tokenizer` when the provider sent no usage and we counted ourselves: a call is never priced at $0 for lack of it. */
  usageSource: 'provider' | 'tokenizer';
  /** Present on grounded calls. */
  grounding?: GroundingResult;
}

/** One streamed piece: text deltas, then exactly one final item with the usage. */
export type CompletionChunk = { type: 'delta'; text: string } | { type: 'done'; result: CompletionResult };

export interface ProviderClient {
  readonly name: ProviderName;
  complete(request: CompletionRequest): Promise<CompletionResult>;
  stream(request: CompletionRequest): AsyncIterable<CompletionChunk>;
}
