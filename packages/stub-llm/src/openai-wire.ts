import {
  SSE_TYPE, JSON_TYPE, isRecord, jsonResponse, mediaTypeFromUrl, readTokenLimit,
  type ChatReply, type ChatRequest, type ParseResult, type RouteInfo, type Wire, type WireResponse,
} from './chat';
import { nextId, unixSeconds } from './ids';
import { base64DecodedBytes, splitForStream, type ImageInfo } from './reply';
import { OPENAI_IMAGE_TOKENS, OPENAI_REPLY_PRIMING_TOKENS, OPENAI_TOKENS_PER_MESSAGE, countTokens } from './tokens';

export interface OpenAIChat extends ChatRequest {
  includeUsage: boolean;
}

type ErrorType = 'invalid_request_error' | 'authentication_error' | 'requests' | 'server_error';

function errorBody(message: string, type: ErrorType, param: string | null, code: string | null): unknown {
  return { error: { message, type, param, code } };
}

function invalid(message: string, param: string | null, code: string | null): WireResponse {
  return jsonResponse(400, errorBody(message, 'invalid_request_error', param, code));
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Reads a data URL's media type and decoded size; remote URLs only get a guess from the extension. */
function imageFromUrl(url: string): ImageInfo {
  const data = /^data:([^;,]*)((?:;[^;,]*)*?)(;base64)?,/i.exec(url);
  if (!data) return { mediaType: mediaTypeFromUrl(url), bytes: null };
  const payload = url.slice(data[0].length);
  const bytes = data[3] ? base64DecodedBytes(payload) : Buffer.byteLength(safeDecode(payload));
  return { mediaType: data[1] || 'text/plain', bytes };
}

interface MessageContent {
  textTokens: number;
  text: string;
  images: ImageInfo[];
}

function readContent(content: unknown, param: string): MessageContent | WireResponse {
  if (content === null || content === undefined) return { textTokens: 0, text: '', images: [] };
  if (typeof content === 'string') return { textTokens: countTokens(content), text: content, images: [] };
  if (!Array.isArray(content)) {
    return invalid(`Invalid type for '${param}': expected one of a string or an array of objects, but got ${typeof content} instead.`, param, 'invalid_type');
  }
  const out: MessageContent = { textTokens: 0, text: '', images: [] };
  const texts: string[] = [];
  for (let i = 0; i < content.length; i++) {
    const part: unknown = content[i];
    const where = `${param}[${i}]`;
    if (!isRecord(part)) return invalid(`Invalid type for '${where}': expected an object.`, where, 'invalid_type');
    if (part.type === 'text') {
      if (typeof part.text !== 'string') return invalid(`Missing required parameter: '${where}.text'.`, `${where}.text`, 'missing_required_parameter');
      out.textTokens += countTokens(part.text);
      texts.push(part.text);
    } else if (part.type === 'image_url') {
      const imageUrl = part.image_url;
      const url = isRecord(imageUrl) ? imageUrl.url : imageUrl;
      if (typeof url !== 'string') return invalid(`Missing required parameter: '${where}.image_url.url'.`, `${where}.image_url.url`, 'missing_required_parameter');
      out.images.push(imageFromUrl(url));
    } else if (typeof part.type !== 'string') {
      return invalid(`Missing required parameter: '${where}.type'.`, `${where}.type`, 'missing_required_parameter');
    }
    // Other part types (audio, files) are accepted and not counted.
  }
  out.text = texts.join('\n');
  return out;
}

function parse(body: unknown, route: RouteInfo): ParseResult<OpenAIChat> {
  if (!isRecord(body)) return { ok: false, model: null, error: invalid('The request body must be a JSON object.', null, null) };
  const model = typeof body.model === 'string' && body.model !== '' ? body.model : null;
  const fail = (error: WireResponse): ParseResult<OpenAIChat> => ({ ok: false, model, error });
  if (model === null) return fail(invalid('you must provide a model parameter', 'model', null));
  const messages = body.messages;
  if (messages === undefined) return fail(invalid("Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter'));
  if (!Array.isArray(messages)) return fail(invalid("Invalid type for 'messages': expected an array.", 'messages', 'invalid_type'));
  if (messages.length === 0) {
    return fail(invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", 'messages', 'empty_array'));
  }

  // OpenAI's cookbook count: per message 3 + tokens(role) + tokens(content) (+ tokens(name) + 1), then 3 to prime the reply.
  let promptTokens = OPENAI_REPLY_PRIMING_TOKENS;
  let images = 0;
  let lastUser: MessageContent = { textTokens: 0, text: '', images: [] };
  for (let i = 0; i < messages.length; i++) {
    const m: unknown = messages[i];
    const where = `messages[${i}]`;
    if (!isRecord(m)) return fail(invalid(`Invalid type for '${where}': expected an object.`, where, 'invalid_type'));
    if (typeof m.role !== 'string') return fail(invalid(`Missing required parameter: '${where}.role'.`, `${where}.role`, 'missing_required_parameter'));
    const content = readContent(m.content, `${where}.content`);
    if ('status' in content) return fail(content);
    promptTokens += OPENAI_TOKENS_PER_MESSAGE + countTokens(m.role) + content.textTokens + content.images.length * OPENAI_IMAGE_TOKENS;
    if (typeof m.name === 'string') promptTokens += countTokens(m.name) + 1;
    images += content.images.length;
    if (m.role === 'user') lastUser = content;
  }

  const streamOptions = body.stream_options;
  return {
    ok: true,
    chat: {
      provider: route.provider,
      model,
      stream: body.stream === true,
      includeUsage: isRecord(streamOptions) && streamOptions.include_usage === true,
      promptTokens,
      images,
      lastUserText: lastUser.text,
      lastUserImages: lastUser.images,
      maxOutputTokens: readTokenLimit(body.max_completion_tokens) ?? readTokenLimit(body.max_tokens),
    },
  };
}

function usage(chat: OpenAIChat, reply: ChatReply): Record<string, unknown> {
  const u: Record<string, unknown> = {
    prompt_tokens: reply.promptTokens,
    completion_tokens: reply.completionTokens,
    total_tokens: reply.promptTokens + reply.completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
  // DeepSeek reports its context cache this way instead of prompt_tokens_details.
  if (chat.provider === 'deepseek') {
    u.prompt_cache_hit_tokens = 0;
    u.prompt_cache_miss_tokens = reply.promptTokens;
  }
  return u;
}

const SYSTEM_FINGERPRINT = 'fp_stub_llm';

function completion(chat: OpenAIChat, reply: ChatReply): WireResponse {
  const id = nextId('chatcmpl-');
  return jsonResponse(200, {
    id,
    object: 'chat.completion',
    created: unixSeconds(),
    model: chat.model,
    choices: [{
      index: 0,
      message: { role: 'assistant', content: reply.text, refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: reply.truncated ? 'length' : 'stop',
    }],
    usage: usage(chat, reply),
    service_tier: 'default',
    system_fingerprint: SYSTEM_FINGERPRINT,
  }, { 'x-request-id': id });
}

function sse(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

function streamed(chat: OpenAIChat, reply: ChatReply): WireResponse {
  const id = nextId('chatcmpl-');
  const head = { id, object: 'chat.completion.chunk', created: unixSeconds(), model: chat.model, service_tier: 'default', system_fingerprint: SYSTEM_FINGERPRINT };
  // With include_usage, OpenAI sends `usage: null` on every chunk but the last.
  const nullUsage = chat.includeUsage ? { usage: null } : {};
  const choice = (delta: Record<string, unknown>, finish: string | null): unknown => ({
    ...head, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...nullUsage,
  });
  let body = sse(choice({ role: 'assistant', content: '', refusal: null }, null));
  for (const piece of splitForStream(reply.text)) body += sse(choice({ content: piece }, null));
  body += sse(choice({}, reply.truncated ? 'length' : 'stop'));
  if (chat.includeUsage) body += sse({ ...head, choices: [], usage: usage(chat, reply) });
  body += 'data: [DONE]\n\n';
  return { status: 200, headers: { 'content-type': SSE_TYPE, 'cache-control': 'no-cache', 'x-request-id': id }, body };
}

function malformed(chat: OpenAIChat, reply: ChatReply): WireResponse {
  const whole = chat.stream ? streamed(chat, reply).body : completion(chat, reply).body;
  if (!chat.stream) return { status: 200, headers: { 'content-type': JSON_TYPE }, body: whole.slice(0, Math.floor(whole.length / 2)) };
  // A valid first event, then a data line cut mid-JSON, and no [DONE].
  const events = whole.split('\n\n');
  const broken = events[1] ?? events[0] ?? 'data: {';
  return { status: 200, headers: { 'content-type': SSE_TYPE }, body: `${events[0] ?? ''}\n\n${broken.slice(0, Math.max(8, Math.floor(broken.length / 2)))}\n\n` };
}

const FAULT_BODIES: Record<'429' | '500' | '503', (model: string) => unknown> = {
  '429': (model) => errorBody(`Rate limit reached for ${model} on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again later.`, 'requests', null, 'rate_limit_exceeded'),
  '500': () => errorBody('The server had an error while processing your request. Sorry about that!', 'server_error', null, null),
  '503': () => errorBody('The engine is currently overloaded, please try again later.', 'server_error', null, null),
};

export const openAIWire: Wire<OpenAIChat> = {
  hasApiKey(headers) {
    const auth = headers.authorization;
    return typeof auth === 'string' && /^Bearer\s+\S+/i.test(auth);
  },
  unauthorized() {
    return jsonResponse(401, errorBody(
      "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      'invalid_request_error', null, null,
    ));
  },
  invalidJson() {
    return invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)", null, null);
  },
  badRequest(message) {
    return invalid(message, null, null);
  },
  parse,
  fault(kind, chat, retryAfterSeconds) {
    const status = Number(kind);
    const headers: Record<string, string> = kind === '429'
      ? { 'retry-after': String(Math.ceil(retryAfterSeconds)), 'retry-after-ms': String(Math.round(retryAfterSeconds * 1000)) }
      : {};
    return jsonResponse(status, FAULT_BODIES[kind](chat.model), headers);
  },
  success(chat, reply) {
    return chat.stream ? streamed(chat, reply) : completion(chat, reply);
  },
  malformed,
};
