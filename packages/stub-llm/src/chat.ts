import type { IncomingHttpHeaders } from 'node:http';
import { searchQueries } from './grounding';
import { composeReplyParts, type ImageInfo } from './reply';
import { countTokens, truncateToTokens } from './tokens';
import type { Provider } from './types';

/** A chat request reduced to what the stub needs, whatever wire it came in on. */
export interface ChatRequest {
  provider: Provider;
  model: string;
  stream: boolean;
  /** Prompt tokens as the provider would bill them, images included. */
  promptTokens: number;
  /** Images in the whole context (billed). */
  images: number;
  lastUserText: string;
  /** Images of the last user turn (mentioned in the reply). */
  lastUserImages: ImageInfo[];
  maxOutputTokens: number | null;
  /** Gemini's googleSearch tool was asked for. */
  grounding?: boolean;
}

export interface ChatReply {
  text: string;
  promptTokens: number;
  completionTokens: number;
  images: number;
  /** Cut short by the request's output-token limit. */
  truncated: boolean;
  /** Searches a grounded call ran (none when it was not grounded or decided not to search). */
  searchQueries: number;
}

/**
 * Tokens of parts.join(' '), counted part by part so the fixed sentences hit the cache. Exact because
 * every part ends in punctuation and the next starts with " <letter>": o200k's pre-tokenizer splits
 * there anyway, so no BPE merge crosses a part boundary (a unit test checks this on varied input).
 */
export function countReplyTokens(parts: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < parts.length; i++) n += countTokens(i === 0 ? parts[i] ?? '' : ` ${parts[i] ?? ''}`);
  return n;
}

export function answer(chat: ChatRequest): ChatReply {
  const parts = composeReplyParts(chat.provider, chat.model, chat.lastUserText, chat.lastUserImages);
  let text = parts.join(' ');
  let completionTokens = countReplyTokens(parts);
  let truncated = false;
  if (chat.maxOutputTokens !== null && completionTokens > chat.maxOutputTokens) {
    text = truncateToTokens(text, chat.maxOutputTokens);
    completionTokens = countTokens(text);
    truncated = true;
  }
  const searches = chat.grounding ? searchQueries(chat.lastUserText).length : 0;
  return { text, promptTokens: chat.promptTokens, completionTokens, images: chat.images, truncated, searchQueries: searches };
}

/** A finished HTTP answer: status, headers and the whole body. */
export interface WireResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface RouteInfo {
  provider: Provider;
  /** From the path (Gemini); null when the body names it (OpenAI). */
  model: string | null;
  /** From the path (Gemini streamGenerateContent); OpenAI reads `stream` from the body. */
  stream: boolean;
  query: URLSearchParams;
}

export type ParseResult<C extends ChatRequest> =
  | { ok: true; chat: C }
  | { ok: false; model: string | null; error: WireResponse };

/** What differs between the OpenAI and Gemini wires; the server drives both the same way. */
export interface Wire<C extends ChatRequest> {
  hasApiKey(headers: IncomingHttpHeaders, query: URLSearchParams): boolean;
  unauthorized(): WireResponse;
  invalidJson(): WireResponse;
  /** A bad `x-stub-fault` header is the caller's mistake, so it is a 400 in this wire's shape. */
  badRequest(message: string): WireResponse;
  parse(body: unknown, route: RouteInfo): ParseResult<C>;
  fault(kind: '429' | '500' | '503', chat: C, retryAfterSeconds: number): WireResponse;
  success(chat: C, reply: ChatReply): WireResponse;
  malformed(chat: C, reply: ChatReply): WireResponse;
}

export const JSON_TYPE = 'application/json';
export const SSE_TYPE = 'text/event-stream';

export function jsonResponse(status: number, value: unknown, headers: Record<string, string> = {}): WireResponse {
  return { status, headers: { 'content-type': JSON_TYPE, ...headers }, body: JSON.stringify(value) };
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const EXTENSION_TYPES: Record<string, string> = {
  png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp',
};

/** Guesses a remote image's type from its extension, the only hint a URL gives. */
export function mediaTypeFromUrl(url: string): string | null {
  const ext = /\.([a-z0-9]+)(?:[?#]|$)/i.exec(url)?.[1]?.toLowerCase();
  return ext === undefined ? null : EXTENSION_TYPES[ext] ?? null;
}

/** Positive integer limit, or null when absent or not a usable number. */
export function readTokenLimit(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : null;
}
