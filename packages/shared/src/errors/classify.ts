import { ZodError } from 'zod';
import { type ErrorClass, googleErrorClasses, openAiErrorClasses } from './sdk-errors';
import { TollgateError } from './tollgate-error';

export const ERROR_CATEGORIES = [
  'rate_limit',
  'timeout',
  'network',
  'provider_unavailable',
  'authentication',
  'invalid_request',
  'content_blocked',
  'budget_exceeded',
] as const;
export type ErrorCategory = (typeof ERROR_CATEGORIES)[number];

export const RECOVERY_STRATEGIES = [
  'retry_with_backoff',
  'fallback_provider',
  'circuit_break',
  'degrade',
  'fail_fast',
  'escalate',
] as const;
export type RecoveryStrategy = (typeof RECOVERY_STRATEGIES)[number];

export interface Classification {
  category: ErrorCategory;
  /** Primary strategy: always `strategies[0]`. */
  strategy: RecoveryStrategy;
  /** Ordered chain, e.g. retry first, then fall back to another provider. */
  strategies: RecoveryStrategy[];
  retryable: boolean;
  /** Machine-readable; safe to return to clients. */
  code: string;
  /** Fixed sentence per code/category: never derived from the error itself. */
  userMessage: string;
  suggestedActions: string[];
  httpStatus: number;
  retryAfterMs?: number;
}

export interface ClassifyOptions {
  /** Clock for HTTP-date Retry-After values (ms since epoch). */
  now?: () => number;
}

export const MAX_RETRY_AFTER_MS = 60_000;
const MAX_CAUSE_DEPTH = 5;

const CATEGORY_DEFAULTS: Record<ErrorCategory, { strategies: RecoveryStrategy[]; retryable: boolean }> = {
  rate_limit: { strategies: ['retry_with_backoff'], retryable: true },
  timeout: { strategies: ['retry_with_backoff', 'fallback_provider'], retryable: true },
  network: { strategies: ['retry_with_backoff', 'fallback_provider'], retryable: true },
  provider_unavailable: { strategies: ['fallback_provider'], retryable: true },
  authentication: { strategies: ['fail_fast'], retryable: false },
  invalid_request: { strategies: ['fail_fast'], retryable: false },
  content_blocked: { strategies: ['degrade'], retryable: false },
  budget_exceeded: { strategies: ['fail_fast'], retryable: false },
};

const CATEGORY_MESSAGES: Record<ErrorCategory, string> = {
  rate_limit: 'Too many requests right now. Please wait a moment and try again.',
  timeout: 'The request took too long to complete. Please try again.',
  network: 'A network problem interrupted the request. Please try again shortly.',
  provider_unavailable: 'The AI service is temporarily unavailable. Please try again shortly.',
  authentication: 'Authentication failed. Check your API key and permissions.',
  invalid_request: 'The request is invalid. Check the input and try again.',
  content_blocked: 'The request or its answer was blocked by a content safety filter.',
  budget_exceeded: 'The spending budget has been reached, so paid requests are paused until it resets or is raised.',
};

const CODE_MESSAGES: Record<string, string> = {
  internal_error: 'An unexpected error occurred. Please try again later.',
  circuit_open: 'The AI service is paused after repeated failures. Please try again shortly.',
  provider_auth_failed: 'The service could not authenticate with the AI provider. This is a configuration problem on our side.',
  provider_quota_exhausted: 'The AI provider account has no remaining quota. This is a configuration problem on our side.',
  provider_rate_limited: 'The AI provider is receiving too many requests. Please try again shortly.',
  provider_rejected_request: 'The AI provider rejected the request. Check the input, for example its length, and try again.',
  provider_malformed_response: 'The AI provider returned an unusable response. Please try again.',
  provider_not_found: 'The configured AI model or endpoint was not found. This is a configuration problem on our side.',
  provider_conflict: 'The AI provider could not process the request in its current state. Please try again later.',
  validation_failed: 'The request did not pass validation. Check the input fields and try again.',
  payload_too_large: 'The request is too large. Reduce its size and try again.',
  unsupported_media_type: 'The content type is not supported.',
  not_found: 'The requested resource was not found.',
  conflict: 'The resource was changed concurrently. Please try again.',
  unauthorized: 'Authentication is required. Provide a valid API key.',
  forbidden: 'You do not have permission to perform this action.',
};

const CATEGORY_ACTIONS: Record<ErrorCategory, string[]> = {
  rate_limit: ['Wait before retrying', 'Reduce the request rate'],
  timeout: ['Try again', 'Shorten the input or lower the output length'],
  network: ['Try again shortly'],
  provider_unavailable: ['Try again shortly', 'Check the service status page'],
  authentication: ['Check the API key', 'Check the permissions of the key'],
  invalid_request: ['Check the request against the API documentation', 'Fix the input and send it again'],
  content_blocked: ['Rephrase the request', 'Remove content that may violate the usage policy'],
  budget_exceeded: ['Wait for the budget period to reset', 'Ask an administrator to raise the budget'],
};

const CODE_ACTIONS: Record<string, string[]> = {
  internal_error: ['Try again later', 'Contact support if the problem persists'],
  circuit_open: ['Try again shortly'],
  provider_auth_failed: ['Contact support if the problem persists'],
  provider_quota_exhausted: ['Try again later', 'Contact support if the problem persists'],
  provider_not_found: ['Contact support if the problem persists'],
  payload_too_large: ['Send a smaller request or image'],
  unsupported_media_type: ['Send a supported content type'],
};

interface Overrides {
  strategies?: RecoveryStrategy[];
  retryable?: boolean;
}

type Draft = { category: ErrorCategory; code: string; httpStatus: number } & Overrides;

function draft(category: ErrorCategory, code: string, httpStatus: number, overrides?: Overrides): Draft {
  return { category, code, httpStatus, ...overrides };
}

function finish(d: Draft, retryAfterMs: number | undefined): Classification {
  const defaults = CATEGORY_DEFAULTS[d.category];
  const strategies = d.strategies ?? defaults.strategies;
  const retryable = d.retryable ?? defaults.retryable;
  const c: Classification = {
    category: d.category,
    strategy: strategies[0] ?? 'fail_fast',
    strategies: [...strategies],
    retryable,
    code: d.code,
    userMessage: CODE_MESSAGES[d.code] ?? CATEGORY_MESSAGES[d.category],
    suggestedActions: [...(CODE_ACTIONS[d.code] ?? CATEGORY_ACTIONS[d.category])],
    httpStatus: d.httpStatus,
  };
  // A server's "come back later" only means something for calls worth repeating.
  if (retryable && retryAfterMs !== undefined) c.retryAfterMs = retryAfterMs;
  return c;
}

const INTERNAL: Draft = draft('provider_unavailable', 'internal_error', 500, { strategies: ['escalate'], retryable: false });
const CIRCUIT_OPEN: Draft = draft('provider_unavailable', 'circuit_open', 503, {
  strategies: ['circuit_break', 'fallback_provider'],
  retryable: false,
});

const TOLLGATE_CODES: Record<string, Draft> = {
  invalid_event: draft('invalid_request', 'invalid_event', 400),
  invalid_request: draft('invalid_request', 'invalid_request', 400),
  validation_failed: draft('invalid_request', 'validation_failed', 400),
  payload_too_large: draft('invalid_request', 'payload_too_large', 413),
  unsupported_media_type: draft('invalid_request', 'unsupported_media_type', 415),
  not_found: draft('invalid_request', 'not_found', 404),
  unknown_operation: draft('invalid_request', 'unknown_operation', 400),
  conflict: draft('invalid_request', 'conflict', 409),
  unauthorized: draft('authentication', 'unauthorized', 401),
  forbidden: draft('authentication', 'forbidden', 403),
  rate_limited: draft('rate_limit', 'rate_limited', 429),
  budget_exceeded: draft('budget_exceeded', 'budget_exceeded', 402),
  content_blocked: draft('content_blocked', 'content_blocked', 422),
  deadline_exceeded: draft('timeout', 'deadline_exceeded', 504),
  circuit_open: CIRCUIT_OPEN,
  provider_unavailable: draft('provider_unavailable', 'provider_unavailable', 502),
  provider_malformed_response: draft('provider_unavailable', 'provider_malformed_response', 502),
};

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** The error, its causes and (for AggregateError, e.g. happy-eyeballs connects) its members, bounded. */
function chain(error: unknown): unknown[] {
  const out: unknown[] = [];
  const seen = new Set<unknown>();
  let level: unknown[] = [error];
  for (let depth = 0; depth <= MAX_CAUSE_DEPTH && level.length > 0; depth++) {
    const next: unknown[] = [];
    for (const e of level) {
      if (!isObject(e) || seen.has(e)) continue;
      seen.add(e);
      out.push(e);
      if ('cause' in e && e.cause !== undefined) next.push(e.cause);
      if (Array.isArray(e.errors)) next.push(...e.errors.slice(0, 4));
    }
    level = next;
  }
  return out;
}

function stringCode(e: unknown): string | undefined {
  return isObject(e) && typeof e.code === 'string' ? e.code : undefined;
}

function nodeCodeDraft(code: string | undefined): Draft | undefined {
  if (code === undefined) return undefined;
  if (code === 'EOPENBREAKER') return CIRCUIT_OPEN;
  if (TIMEOUT_CODES.has(code)) return draft('timeout', 'timeout', 504);
  if (NETWORK_CODES.has(code)) return draft('network', 'network_error', 502);
  return undefined;
}

function networkFromCauses(error: unknown): Draft | undefined {
  for (const e of chain(error)) {
    const d = nodeCodeDraft(stringCode(e));
    if (d) return d;
  }
  return undefined;
}

function providerAuth(): Draft {
  // The provider refused our credentials: the client cannot fix that, an operator must.
  return draft('authentication', 'provider_auth_failed', 502, { strategies: ['fail_fast', 'escalate'] });
}

/**
 * An HTTP status that came back from a provider (or an unknown upstream).
 * Provider 400/422 stays a 400: after our own validation, what providers still reject is mostly
 * input the client can change (too long for the context window, an unreadable image).
 * Provider 404/409 mean a wrong model name or endpoint on our side, so the client gets a 502.
 */
function providerStatusDraft(status: number): Draft | undefined {
  if (status === 429) {
    // Another provider has its own quota, so falling back is worth it once retries run out.
    return draft('rate_limit', 'provider_rate_limited', 503, { strategies: ['retry_with_backoff', 'fallback_provider'] });
  }
  if (status === 408 || status === 504) return draft('timeout', 'provider_timeout', 504);
  if (status === 401 || status === 403) return providerAuth();
  if (status === 400 || status === 422) return draft('invalid_request', 'provider_rejected_request', 400);
  if (status === 413) return draft('invalid_request', 'payload_too_large', 413);
  if (status === 415) return draft('invalid_request', 'unsupported_media_type', 415);
  if (status === 404) return draft('invalid_request', 'provider_not_found', 502);
  if (status === 409) return draft('invalid_request', 'provider_conflict', 502);
  if (status >= 500 && status <= 599) return draft('provider_unavailable', 'provider_unavailable', 502);
  // Other 4xx (402 billing, 410, 451...) are specific to this provider: another one may serve it.
  if (status >= 400 && status <= 499) return draft('provider_unavailable', 'provider_unavailable', 502);
  return undefined;
}

const CONTENT_FILTER_RE = /content_filter|content_policy|responsibleaipolicyviolation/i;
const GOOGLE_BLOCKED_RE = /\bSAFETY\b|PROHIBITED_CONTENT|BLOCKLIST|\bblocked\b/i;

function isInstance(e: unknown, errorClass: ErrorClass<Error>): boolean {
  return e instanceof errorClass;
}

/** OpenAI SDK errors (DeepSeek speaks its API through the same SDK): none before the SDK loaded. */
function openAiDraft(e: unknown): Draft | undefined {
  const sdk = openAiErrorClasses();
  if (!sdk) return undefined;
  if (e instanceof sdk.ContentFilterFinishReasonError) return draft('content_blocked', 'content_blocked', 422);
  if (!(e instanceof sdk.APIError)) return undefined;
  // Subclass before base class: the timeout error is also a connection error. (A plain boolean
  // test: the subclasses share APIError's shape, so `instanceof` would narrow the rest to never.)
  if (isInstance(e, sdk.APIConnectionTimeoutError)) return draft('timeout', 'provider_timeout', 504);
  if (isInstance(e, sdk.APIUserAbortError)) return draft('timeout', 'deadline_exceeded', 504);
  if (isInstance(e, sdk.APIConnectionError)) return networkFromCauses(e.cause) ?? draft('network', 'network_error', 502);

  const status = typeof e.status === 'number' ? e.status : undefined;
  const marker = `${e.code ?? ''} ${e.type ?? ''} ${innerCode(e.error)}`;
  if ((status === 400 || status === 422 || status === undefined) && CONTENT_FILTER_RE.test(marker)) {
    return draft('content_blocked', 'content_blocked', 422);
  }
  // A billing problem dressed as a 429: retrying never helps, another provider might.
  if (status === 429 && /insufficient_quota/.test(marker)) {
    return draft('provider_unavailable', 'provider_quota_exhausted', 502, {
      strategies: ['fallback_provider', 'escalate'],
      retryable: false,
    });
  }
  if (status !== undefined) return providerStatusDraft(status);
  // No status: an error event inside a stream.
  return draft('provider_unavailable', 'provider_unavailable', 502);
}

function innerCode(body: unknown): string {
  if (!isObject(body)) return '';
  const inner = body.innererror;
  return isObject(inner) && typeof inner.code === 'string' ? inner.code : '';
}

function googleDraft(e: unknown): Draft | undefined {
  const sdk = googleErrorClasses();
  const isSdkError = sdk !== undefined && e instanceof sdk.ApiError;
  if (!isSdkError && !(isObject(e) && e.name === 'ApiError' && typeof e.status === 'number')) {
    return undefined;
  }
  const status = typeof e.status === 'number' ? e.status : 0;
  const message = typeof e.message === 'string' ? e.message : '';
  if (status === 429 || message.includes('RESOURCE_EXHAUSTED')) return providerStatusDraft(429);
  if (status !== 401 && status !== 403 && status < 500 && GOOGLE_BLOCKED_RE.test(message)) {
    return draft('content_blocked', 'content_blocked', 422);
  }
  return providerStatusDraft(status) ?? draft('provider_unavailable', 'provider_unavailable', 502);
}

function httpStatusOf(e: unknown): number | undefined {
  if (!isObject(e)) return undefined;
  if (typeof e.status === 'number') return e.status;
  if (typeof e.statusCode === 'number') return e.statusCode;
  return undefined;
}

function bareStatusDraft(e: unknown): Draft | undefined {
  const status = httpStatusOf(e);
  if (status === undefined) return undefined;
  // http-errors (body-parser, express) mark errors made from the client's own request with `expose`.
  if (isObject(e) && e.expose === true && status >= 400 && status < 500) {
    if (status === 413) return TOLLGATE_CODES.payload_too_large;
    if (status === 415) return TOLLGATE_CODES.unsupported_media_type;
    if (status === 404) return TOLLGATE_CODES.not_found;
    if (status === 429) return TOLLGATE_CODES.rate_limited;
    if (status === 401) return TOLLGATE_CODES.unauthorized;
    if (status === 403) return TOLLGATE_CODES.forbidden;
    return TOLLGATE_CODES.invalid_request;
  }
  return providerStatusDraft(status);
}

function abortDraft(e: unknown): Draft | undefined {
  if (isObject(e) && (e.name === 'AbortError' || e.name === 'TimeoutError')) return draft('timeout', 'deadline_exceeded', 504);
  return undefined;
}

function zodDraft(e: unknown): Draft | undefined {
  if (e instanceof ZodError || (isObject(e) && (e.name === 'ZodError' || e.name === '$ZodError'))) {
    return draft('invalid_request', 'validation_failed', 400);
  }
  return undefined;
}

function tollgateDraft(e: unknown): Draft | undefined {
  if (!(e instanceof TollgateError)) return undefined;
  const known = TOLLGATE_CODES[e.code];
  // Keep our own code; only the mapping comes from the table.
  return known ? { ...known, code: e.code } : undefined;
}

/** One level of the cause chain through every recogniser, in precedence order. */
function classifyOne(e: unknown): Draft | undefined {
  return (
    tollgateDraft(e) ??
    zodDraft(e) ??
    openAiDraft(e) ??
    googleDraft(e) ??
    bareStatusDraft(e) ??
    nodeCodeDraft(stringCode(e)) ??
    abortDraft(e)
  );
}

function header(headers: unknown, name: string): string | undefined {
  if (!isObject(headers)) return undefined;
  if (typeof headers.get === 'function') {
    const v: unknown = (headers.get as (n: string) => unknown).call(headers, name);
    return typeof v === 'string' ? v : undefined;
  }
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== name) continue;
    if (typeof v === 'string') return v;
    if (typeof v === 'number') return String(v);
    if (Array.isArray(v) && typeof v[0] === 'string') return v[0];
  }
  return undefined;
}

function clampRetryAfter(ms: number): number | undefined {
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.ceil(ms)));
}

function retryAfterFromHeaders(headers: unknown, now: number): number | undefined {
  const ms = header(headers, 'retry-after-ms');
  if (ms !== undefined && ms.trim() !== '' && Number.isFinite(Number(ms))) return clampRetryAfter(Number(ms));
  const ra = header(headers, 'retry-after');
  if (ra === undefined || ra.trim() === '') return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(ra)) return clampRetryAfter(Number(ra) * 1000);
  const at = Date.parse(ra);
  return Number.isNaN(at) ? undefined : clampRetryAfter(at - now);
}

/** Retry-After from the error or anything it wraps: `details.retry_after_ms`, then response headers. */
export function retryAfterMsOf(error: unknown, now: number = Date.now()): number | undefined {
  for (const e of chain(error)) {
    if (!isObject(e)) continue;
    const details = e.details;
    if (isObject(details) && typeof details.retry_after_ms === 'number') {
      const v = clampRetryAfter(details.retry_after_ms);
      if (v !== undefined) return v;
    }
    const fromHeaders = retryAfterFromHeaders(e.headers, now);
    if (fromHeaders !== undefined) return fromHeaders;
    if (isObject(e.response)) {
      const fromResponse = retryAfterFromHeaders(e.response.headers, now);
      if (fromResponse !== undefined) return fromResponse;
    }
  }
  return undefined;
}

/**
 * Maps any thrown value to one of the 8 categories with its recovery chain and a client-safe message.
 * Wrappers are looked through: the first level of the cause chain that is recognised wins.
 */
export function classify(error: unknown, options?: ClassifyOptions): Classification {
  let found: Draft | undefined;
  for (const e of chain(error)) {
    found = classifyOne(e);
    if (found) break;
  }
  const now = options?.now?.() ?? Date.now();
  return finish(found ?? INTERNAL, retryAfterMsOf(error, now));
}
