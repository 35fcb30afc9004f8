import {
  JSON_TYPE, SSE_TYPE, isRecord, jsonResponse, readTokenLimit,
  type ChatReply, type ChatRequest, type ParseResult, type RouteInfo, type Wire, type WireResponse,
} from './chat';
import { groundingFor, wantsSearch } from './grounding';
import { nextId } from './ids';
import { base64DecodedBytes, splitForStream, type ImageInfo } from './reply';
import { GEMINI_IMAGE_TOKENS, countTokens } from './tokens';

export interface GeminiChat extends ChatRequest {
  /** `alt=sse`; without it streamGenerateContent answers one JSON array. */
  sse: boolean;
  textTokens: number;
}

type GeminiStatus = 'INVALID_ARGUMENT' | 'UNAUTHENTICATED' | 'RESOURCE_EXHAUSTED' | 'INTERNAL' | 'UNAVAILABLE';

function errorResponse(code: number, status: GeminiStatus, message: string, headers: Record<string, string> = {}, details?: unknown[]): WireResponse {
  return jsonResponse(code, { error: details ? { code, message, status, details } : { code, message, status } }, headers);
}

function invalid(message: string): WireResponse {
  return errorResponse(400, 'INVALID_ARGUMENT', message);
}

interface PartsSummary {
  textTokens: number;
  text: string;
  images: ImageInfo[];
}

function readParts(parts: unknown, where: string): PartsSummary | WireResponse {
  if (!Array.isArray(parts)) return invalid(`* GenerateContentRequest.${where}.parts: parts is not specified\n`);
  const out: PartsSummary = { textTokens: 0, text: '', images: [] };
  const texts: string[] = [];
  for (const part of parts) {
    if (!isRecord(part)) return invalid(`Invalid value at '${where}.parts': expected an object`);
    if (typeof part.text === 'string') {
      out.textTokens += countTokens(part.text);
      texts.push(part.text);
    }
    const inline = part.inlineData;
    if (isRecord(inline) && typeof inline.mimeType === 'string' && inline.mimeType.startsWith('image/')) {
      out.images.push({ mediaType: inline.mimeType, bytes: typeof inline.data === 'string' ? base64DecodedBytes(inline.data) : 0 });
    }
    const file = part.fileData;
    if (isRecord(file) && typeof file.mimeType === 'string' && file.mimeType.startsWith('image/')) {
      out.images.push({ mediaType: file.mimeType, bytes: null });
    }
    // Non-image inline data (audio, PDF) is accepted and not counted.
  }
  out.text = texts.join('\n');
  return out;
}

function parse(body: unknown, route: RouteInfo): ParseResult<GeminiChat> {
  const model = route.model;
  const fail = (error: WireResponse): ParseResult<GeminiChat> => ({ ok: false, model, error });
  if (model === null) return fail(invalid('* GenerateContentRequest.model: unexpected model name format\n'));
  if (!isRecord(body)) return fail(invalid('Invalid JSON payload received. Expected an object.'));
  const contents = body.contents;
  if (!Array.isArray(contents) || contents.length === 0) return fail(invalid('* GenerateContentRequest.contents: contents is not specified\n'));

  let textTokens = 0;
  let images = 0;
  if (body.systemInstruction !== undefined) {
    const system = isRecord(body.systemInstruction) ? readParts(body.systemInstruction.parts, 'system_instruction') : invalid("Invalid value at 'system_instruction'");
    if ('status' in system) return fail(system);
    textTokens += system.textTokens;
  }
  let lastUser: PartsSummary = { textTokens: 0, text: '', images: [] };
  for (let i = 0; i < contents.length; i++) {
    const c: unknown = contents[i];
    if (!isRecord(c)) return fail(invalid(`Invalid value at 'contents[${i}]': expected an object`));
    const summary = readParts(c.parts, `contents[${i}]`);
    if ('status' in summary) return fail(summary);
    textTokens += summary.textTokens;
    images += summary.images.length;
    if (c.role === undefined || c.role === 'user') lastUser = summary;
  }

  const config = body.generationConfig;
  return {
    ok: true,
    chat: {
      provider: route.provider,
      model,
      stream: route.stream,
      sse: route.query.get('alt') === 'sse',
      textTokens,
      // Gemini adds no per-turn overhead that the stub could know; text tokens plus a flat price per image.
      promptTokens: textTokens + images * GEMINI_IMAGE_TOKENS,
      images,
      lastUserText: lastUser.text,
      lastUserImages: lastUser.images,
      maxOutputTokens: isRecord(config) ? readTokenLimit(config.maxOutputTokens) : null,
      grounding: wantsSearch(body.tools),
    },
  };
}

function promptDetails(chat: GeminiChat): unknown[] {
  const details: unknown[] = [{ modality: 'TEXT', tokenCount: chat.textTokens }];
  if (chat.images > 0) details.push({ modality: 'IMAGE', tokenCount: chat.images * GEMINI_IMAGE_TOKENS });
  return details;
}

function fullUsage(chat: GeminiChat, reply: ChatReply): unknown {
  return {
    promptTokenCount: reply.promptTokens,
    candidatesTokenCount: reply.completionTokens,
    totalTokenCount: reply.promptTokens + reply.completionTokens,
    promptTokensDetails: promptDetails(chat),
  };
}

function candidate(text: string, finishReason: string | undefined, grounding?: Record<string, unknown>): unknown {
  const c: Record<string, unknown> = { content: { role: 'model', parts: [{ text }] }, index: 0 };
  if (finishReason !== undefined) c.finishReason = finishReason;
  if (grounding) c.groundingMetadata = grounding;
  return c;
}

/** Grounded answers carry the metadata on the (last) candidate, as Gemini sends it. */
function groundingOf(chat: GeminiChat, reply: ChatReply): Record<string, unknown> | undefined {
  return chat.grounding ? groundingFor(chat.lastUserText, reply.text).metadata : undefined;
}

function chunks(chat: GeminiChat, reply: ChatReply): unknown[] {
  const responseId = nextId('stub-');
  const finish = reply.truncated ? 'MAX_TOKENS' : 'STOP';
  const pieces = splitForStream(reply.text);
  if (pieces.length === 0) pieces.push('');
  // Like Gemini, early chunks carry the running usage (prompt only) and the last one the full count.
  const partial = { promptTokenCount: reply.promptTokens, totalTokenCount: reply.promptTokens, promptTokensDetails: promptDetails(chat) };
  return pieces.map((piece, i) => {
    const last = i === pieces.length - 1;
    return {
      candidates: [candidate(piece, last ? finish : undefined, last ? groundingOf(chat, reply) : undefined)],
      usageMetadata: last ? fullUsage(chat, reply) : partial,
      modelVersion: chat.model,
      responseId,
    };
  });
}

function whole(chat: GeminiChat, reply: ChatReply): unknown {
  return {
    candidates: [candidate(reply.text, reply.truncated ? 'MAX_TOKENS' : 'STOP', groundingOf(chat, reply))],
    usageMetadata: fullUsage(chat, reply),
    modelVersion: chat.model,
    responseId: nextId('stub-'),
  };
}

function sseEvent(value: unknown): string {
  return `data: ${JSON.stringify(value)}\r\n\r\n`;
}

function success(chat: GeminiChat, reply: ChatReply): WireResponse {
  if (!chat.stream) return jsonResponse(200, whole(chat, reply));
  const parts = chunks(chat, reply);
  if (!chat.sse) return jsonResponse(200, parts);
  return { status: 200, headers: { 'content-type': SSE_TYPE, 'cache-control': 'no-cache' }, body: parts.map(sseEvent).join('') };
}

function malformed(chat: GeminiChat, reply: ChatReply): WireResponse {
  if (chat.stream && chat.sse) {
    const [first, second] = chunks(chat, reply).map(sseEvent);
    const broken = second ?? first ?? 'data: {';
    return {
      status: 200,
      headers: { 'content-type': SSE_TYPE },
      body: `${first ?? ''}${broken.slice(0, Math.max(8, Math.floor(broken.length / 2)))}\r\n\r\n`,
    };
  }
  const text = JSON.stringify(chat.stream ? chunks(chat, reply) : whole(chat, reply));
  return { status: 200, headers: { 'content-type': JSON_TYPE }, body: text.slice(0, Math.floor(text.length / 2)) };
}

export const geminiWire: Wire<GeminiChat> = {
  hasApiKey(headers, query) {
    const key = headers['x-goog-api-key'];
    return (typeof key === 'string' && key !== '') || (query.get('key') ?? '') !== '';
  },
  unauthorized() {
    return errorResponse(401, 'UNAUTHENTICATED',
      "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.");
  },
  invalidJson() {
    return invalid('Invalid JSON payload received. Unexpected token.');
  },
  badRequest: invalid,
  parse,
  fault(kind, _chat, retryAfterSeconds) {
    if (kind === '429') {
      return errorResponse(429, 'RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).', {
        'retry-after': String(Math.ceil(retryAfterSeconds)),
        'retry-after-ms': String(Math.round(retryAfterSeconds * 1000)),
      }, [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryAfterSeconds}s` }]);
    }
    if (kind === '500') return errorResponse(500, 'INTERNAL', 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting');
    return errorResponse(503, 'UNAVAILABLE', 'The model is overloaded. Please try again later.');
  },
  success,
  malformed,
};
