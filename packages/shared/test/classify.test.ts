import net from 'node:net';
import OpenAI from 'openai';
import { ContentFilterFinishReasonError } from 'openai/core/error';
import { ApiError } from '@google/genai';
import CircuitBreaker from 'opossum';
import { z } from 'zod';
// SDK errors reach the classifier in processes that loaded the SDK, i.e. its provider client.
import '../src/errors/openai-errors';
import '../src/errors/google-errors';
import {
  classify,
  ERROR_CATEGORIES,
  RECOVERY_STRATEGIES,
  retryAfterMsOf,
  type Classification,
  type ErrorCategory,
  type RecoveryStrategy,
} from '../src/errors/classify';
import { BudgetExceededError, InvalidEventError, TollgateError } from '../src/errors/tollgate-error';
import {
  CircuitOpenError,
  ContentBlockedError,
  DeadlineExceededError,
  MalformedResponseError,
  ProviderUnavailableError,
} from '../src/errors/provider-errors';

// Planted in error messages: none of it may reach a client.
const SECRET = 'sk-proj-SECRET1234567890 https://api.openai.com/v1/chat at Object.<anonymous> (/srv/app.js:1:1)';

function nodeError(code: string): Error {
  return Object.assign(new Error(`${code} ${SECRET}`), { code });
}

function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// Errors that need I/O or timers to exist, produced once for real.
const real: Record<string, unknown> = {};

beforeAll(async () => {
  const port = await closedPort();
  real.fetchRefused = await fetch(`http://127.0.0.1:${port}/`).then(
    () => undefined,
    (e: unknown) => e,
  );
  const client = new OpenAI({ apiKey: 'sk-test-not-real', baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });
  real.openaiRefused = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [] }).then(
    () => undefined,
    (e: unknown) => e,
  );

  const signal = AbortSignal.timeout(1);
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  real.abortTimeout = signal.reason;
  const controller = new AbortController();
  controller.abort();
  real.abortError = controller.signal.reason;

  const openBreaker = new CircuitBreaker(async () => 'ok');
  openBreaker.open();
  real.opossumOpen = await openBreaker.fire().then(
    () => undefined,
    (e: unknown) => e,
  );
  openBreaker.shutdown();

  const slowBreaker = new CircuitBreaker(() => new Promise((r) => setTimeout(r, 50).unref()), { timeout: 5 });
  real.opossumTimeout = await slowBreaker.fire().then(
    () => undefined,
    (e: unknown) => e,
  );
  slowBreaker.shutdown();

  const zodResult = z.object({ prompt: z.string().min(1) }).safeParse({ prompt: 42 });
  real.zod = zodResult.success ? undefined : zodResult.error;
});

const headers = (init?: Record<string, string>) => new Headers(init);

interface Case {
  name: string;
  make: () => unknown;
  category: ErrorCategory;
  strategy: RecoveryStrategy;
  retryable: boolean;
  httpStatus: number;
  code?: string;
  strategies?: RecoveryStrategy[];
}

const cases: Case[] = [
  // rate_limit
  {
    name: 'openai RateLimitError',
    make: () =>
      new OpenAI.RateLimitError(429, { message: `Rate limit ${SECRET}`, code: 'rate_limit_exceeded' }, undefined, headers({ 'retry-after': '2' })),
    category: 'rate_limit', strategy: 'retry_with_backoff', retryable: true, httpStatus: 503, code: 'provider_rate_limited',
    strategies: ['retry_with_backoff', 'fallback_provider'],
  },
  {
    name: 'gemini ApiError 429 RESOURCE_EXHAUSTED',
    make: () => new ApiError({ message: `{"error":{"code":429,"message":"Quota ${SECRET}","status":"RESOURCE_EXHAUSTED"}}`, status: 429 }),
    category: 'rate_limit', strategy: 'retry_with_backoff', retryable: true, httpStatus: 503, code: 'provider_rate_limited',
  },
  {
    name: 'gemini RESOURCE_EXHAUSTED in the body only',
    make: () => new ApiError({ message: `got status: RESOURCE_EXHAUSTED. ${SECRET}`, status: 400 }),
    category: 'rate_limit', strategy: 'retry_with_backoff', retryable: true, httpStatus: 503,
  },
  {
    name: 'our own rate_limited',
    make: () => new TollgateError('rate_limited', `Too many ${SECRET}`, { details: { retry_after_ms: 1500 } }),
    category: 'rate_limit', strategy: 'retry_with_backoff', retryable: true, httpStatus: 429, code: 'rate_limited',
    strategies: ['retry_with_backoff'],
  },
  {
    name: 'bare statusCode 429',
    make: () => Object.assign(new Error(`Too Many Requests ${SECRET}`), { statusCode: 429 }),
    category: 'rate_limit', strategy: 'retry_with_backoff', retryable: true, httpStatus: 503, code: 'provider_rate_limited',
  },
  // timeout
  {
    name: 'openai APIConnectionTimeoutError',
    make: () => new OpenAI.APIConnectionTimeoutError({ message: `timed out ${SECRET}` }),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504, code: 'provider_timeout',
    strategies: ['retry_with_backoff', 'fallback_provider'],
  },
  {
    name: 'openai APIUserAbortError',
    make: () => new OpenAI.APIUserAbortError({ message: `aborted ${SECRET}` }),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504, code: 'deadline_exceeded',
  },
  {
    name: 'AbortSignal.timeout reason',
    make: () => real.abortTimeout,
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504, code: 'deadline_exceeded',
  },
  {
    name: 'AbortController abort reason',
    make: () => real.abortError,
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504,
  },
  {
    name: 'node ETIMEDOUT',
    make: () => nodeError('ETIMEDOUT'),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504, code: 'timeout',
  },
  {
    name: 'undici headers timeout',
    make: () => nodeError('UND_ERR_HEADERS_TIMEOUT'),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504,
  },
  {
    name: 'opossum timeout',
    make: () => real.opossumTimeout,
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504,
  },
  {
    name: 'DeadlineExceededError',
    make: () => new DeadlineExceededError(`deadline ${SECRET}`),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504, code: 'deadline_exceeded',
  },
  {
    name: 'gemini 504 DEADLINE_EXCEEDED',
    make: () => new ApiError({ message: `{"error":{"code":504,"status":"DEADLINE_EXCEEDED","message":"${SECRET}"}}`, status: 504 }),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504, code: 'provider_timeout',
  },
  // network
  {
    name: 'real fetch to a closed port',
    make: () => real.fetchRefused,
    category: 'network', strategy: 'retry_with_backoff', retryable: true, httpStatus: 502, code: 'network_error',
    strategies: ['retry_with_backoff', 'fallback_provider'],
  },
  {
    name: 'real openai client to a closed port',
    make: () => real.openaiRefused,
    category: 'network', strategy: 'retry_with_backoff', retryable: true, httpStatus: 502, code: 'network_error',
  },
  {
    name: 'node ECONNRESET',
    make: () => nodeError('ECONNRESET'),
    category: 'network', strategy: 'retry_with_backoff', retryable: true, httpStatus: 502,
  },
  {
    name: 'DNS ENOTFOUND under a wrapper',
    make: () => new Error(`lookup failed ${SECRET}`, { cause: nodeError('ENOTFOUND') }),
    category: 'network', strategy: 'retry_with_backoff', retryable: true, httpStatus: 502,
  },
  {
    name: 'undici socket error',
    make: () => nodeError('UND_ERR_SOCKET'),
    category: 'network', strategy: 'retry_with_backoff', retryable: true, httpStatus: 502,
  },
  {
    name: 'openai APIConnectionError without a cause',
    make: () => new OpenAI.APIConnectionError({ message: `Connection error ${SECRET}` }),
    category: 'network', strategy: 'retry_with_backoff', retryable: true, httpStatus: 502,
  },
  {
    name: 'openai APIConnectionError whose cause timed out',
    make: () => new OpenAI.APIConnectionError({ cause: new TypeError('fetch failed', { cause: nodeError('ETIMEDOUT') }) }),
    category: 'timeout', strategy: 'retry_with_backoff', retryable: true, httpStatus: 504,
  },
  // provider_unavailable
  {
    name: 'openai InternalServerError 500',
    make: () => new OpenAI.InternalServerError(500, { message: `server ${SECRET}`, type: 'server_error' }, undefined, headers()),
    category: 'provider_unavailable', strategy: 'fallback_provider', retryable: true, httpStatus: 502, code: 'provider_unavailable',
    strategies: ['fallback_provider'],
  },
  {
    name: 'gemini 503 UNAVAILABLE',
    make: () => new ApiError({ message: `{"error":{"code":503,"status":"UNAVAILABLE","message":"overloaded ${SECRET}"}}`, status: 503 }),
    category: 'provider_unavailable', strategy: 'fallback_provider', retryable: true, httpStatus: 502,
  },
  {
    name: 'bare status 502',
    make: () => Object.assign(new Error(`Bad Gateway ${SECRET}`), { status: 502 }),
    category: 'provider_unavailable', strategy: 'fallback_provider', retryable: true, httpStatus: 502,
  },
  {
    name: 'ProviderUnavailableError',
    make: () => new ProviderUnavailableError(`down ${SECRET}`),
    category: 'provider_unavailable', strategy: 'fallback_provider', retryable: true, httpStatus: 502, code: 'provider_unavailable',
  },
  {
    name: 'MalformedResponseError',
    make: () => new MalformedResponseError(`bad json ${SECRET}`),
    category: 'provider_unavailable', strategy: 'fallback_provider', retryable: true, httpStatus: 502, code: 'provider_malformed_response',
  },
  {
    name: 'CircuitOpenError',
    make: () => new CircuitOpenError('openai:chat'),
    category: 'provider_unavailable', strategy: 'circuit_break', retryable: false, httpStatus: 503, code: 'circuit_open',
    strategies: ['circuit_break', 'fallback_provider'],
  },
  {
    name: 'opossum open breaker',
    make: () => real.opossumOpen,
    category: 'provider_unavailable', strategy: 'circuit_break', retryable: false, httpStatus: 503, code: 'circuit_open',
  },
  {
    name: 'openai insufficient_quota 429',
    make: () =>
      new OpenAI.RateLimitError(429, { message: `quota ${SECRET}`, type: 'insufficient_quota', code: 'insufficient_quota' }, undefined, headers()),
    category: 'provider_unavailable', strategy: 'fallback_provider', retryable: false, httpStatus: 502, code: 'provider_quota_exhausted',
    strategies: ['fallback_provider', 'escalate'],
  },
  {
    name: 'unknown bug',
    make: () => new TypeError(`Cannot read properties of undefined ${SECRET}`),
    category: 'provider_unavailable', strategy: 'escalate', retryable: false, httpStatus: 500, code: 'internal_error',
    strategies: ['escalate'],
  },
  {
    name: 'a thrown string',
    make: () => `boom ${SECRET}`,
    category: 'provider_unavailable', strategy: 'escalate', retryable: false, httpStatus: 500, code: 'internal_error',
  },
  // authentication
  {
    name: 'openai AuthenticationError',
    make: () =>
      new OpenAI.AuthenticationError(401, { message: `Incorrect API key provided: ${SECRET}`, code: 'invalid_api_key' }, undefined, headers()),
    category: 'authentication', strategy: 'fail_fast', retryable: false, httpStatus: 502, code: 'provider_auth_failed',
    strategies: ['fail_fast', 'escalate'],
  },
  {
    name: 'openai PermissionDeniedError',
    make: () => new OpenAI.PermissionDeniedError(403, { message: `denied ${SECRET}` }, undefined, headers()),
    category: 'authentication', strategy: 'fail_fast', retryable: false, httpStatus: 502, code: 'provider_auth_failed',
  },
  {
    name: 'gemini 403 PERMISSION_DENIED',
    make: () => new ApiError({ message: `{"error":{"code":403,"status":"PERMISSION_DENIED","message":"key blocked ${SECRET}"}}`, status: 403 }),
    category: 'authentication', strategy: 'fail_fast', retryable: false, httpStatus: 502, code: 'provider_auth_failed',
  },
  {
    name: 'bare statusCode 401',
    make: () => Object.assign(new Error(`Unauthorized ${SECRET}`), { statusCode: 401 }),
    category: 'authentication', strategy: 'fail_fast', retryable: false, httpStatus: 502, code: 'provider_auth_failed',
  },
  {
    name: 'our own unauthorized',
    make: () => new TollgateError('unauthorized', `missing key ${SECRET}`),
    category: 'authentication', strategy: 'fail_fast', retryable: false, httpStatus: 401, code: 'unauthorized', strategies: ['fail_fast'],
  },
  {
    name: 'our own forbidden',
    make: () => new TollgateError('forbidden', `not yours ${SECRET}`),
    category: 'authentication', strategy: 'fail_fast', retryable: false, httpStatus: 403, code: 'forbidden',
  },
  // invalid_request
  {
    name: 'real ZodError',
    make: () => real.zod,
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 400, code: 'validation_failed',
  },
  {
    name: 'InvalidEventError',
    make: () => new InvalidEventError(`bad event ${SECRET}`),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 400, code: 'invalid_event',
  },
  {
    name: 'openai BadRequestError',
    make: () =>
      new OpenAI.BadRequestError(400, { message: `context_length_exceeded ${SECRET}`, code: 'context_length_exceeded' }, undefined, headers()),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 400, code: 'provider_rejected_request',
  },
  {
    name: 'openai UnprocessableEntityError',
    make: () => new OpenAI.UnprocessableEntityError(422, { message: SECRET }, undefined, headers()),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 400, code: 'provider_rejected_request',
  },
  {
    name: 'openai NotFoundError (unknown model)',
    make: () => new OpenAI.NotFoundError(404, { message: `model not found ${SECRET}` }, undefined, headers()),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 502, code: 'provider_not_found',
  },
  {
    name: 'openai ConflictError',
    make: () => new OpenAI.ConflictError(409, { message: SECRET }, undefined, headers()),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 502, code: 'provider_conflict',
  },
  {
    name: 'gemini 400 INVALID_ARGUMENT',
    make: () => new ApiError({ message: `{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"${SECRET}"}}`, status: 400 }),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 400, code: 'provider_rejected_request',
  },
  {
    name: 'our own payload_too_large',
    make: () => new TollgateError('payload_too_large', `image too big ${SECRET}`),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 413, code: 'payload_too_large',
  },
  {
    name: 'body-parser style 413 (http-errors, expose)',
    make: () => Object.assign(new Error(`request entity too large ${SECRET}`), { status: 413, statusCode: 413, expose: true, type: 'entity.too.large' }),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 413, code: 'payload_too_large',
  },
  {
    name: 'body-parser style JSON syntax error 400',
    make: () => Object.assign(new SyntaxError(`Unexpected token ${SECRET}`), { status: 400, expose: true, type: 'entity.parse.failed' }),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 400, code: 'invalid_request',
  },
  {
    name: 'our own unsupported_media_type',
    make: () => new TollgateError('unsupported_media_type', SECRET),
    category: 'invalid_request', strategy: 'fail_fast', retryable: false, httpStatus: 415,
  },
  // content_blocked
  {
    name: 'openai 400 content_filter',
    make: () =>
      new OpenAI.BadRequestError(400, { message: `filtered ${SECRET}`, code: 'content_filter', type: 'invalid_request_error' }, undefined, headers()),
    category: 'content_blocked', strategy: 'degrade', retryable: false, httpStatus: 422, code: 'content_blocked', strategies: ['degrade'],
  },
  {
    name: 'openai 400 content_policy_violation',
    make: () => new OpenAI.BadRequestError(400, { message: SECRET, code: 'content_policy_violation' }, undefined, headers()),
    category: 'content_blocked', strategy: 'degrade', retryable: false, httpStatus: 422,
  },
  {
    name: 'openai ContentFilterFinishReasonError',
    make: () => new ContentFilterFinishReasonError(),
    category: 'content_blocked', strategy: 'degrade', retryable: false, httpStatus: 422,
  },
  {
    name: 'gemini 400 SAFETY',
    make: () => new ApiError({ message: `{"error":{"code":400,"message":"blocked for SAFETY ${SECRET}"}}`, status: 400 }),
    category: 'content_blocked', strategy: 'degrade', retryable: false, httpStatus: 422,
  },
  {
    name: 'ContentBlockedError',
    make: () => new ContentBlockedError(`blocked ${SECRET}`),
    category: 'content_blocked', strategy: 'degrade', retryable: false, httpStatus: 422, code: 'content_blocked',
  },
  // budget_exceeded
  {
    name: 'BudgetExceededError',
    make: () => new BudgetExceededError('user', 'u-1', 'day', { spent_micros: 50_000_000, limit_micros: 50_000_000 }),
    category: 'budget_exceeded', strategy: 'fail_fast', retryable: false, httpStatus: 402, code: 'budget_exceeded', strategies: ['fail_fast'],
  },
  {
    name: 'BudgetExceededError under a wrapper',
    make: () => new Error(`workflow failed ${SECRET}`, { cause: new BudgetExceededError('project', 'p-9', 'month') }),
    category: 'budget_exceeded', strategy: 'fail_fast', retryable: false, httpStatus: 402, code: 'budget_exceeded',
  },
  {
    name: 'plain TollgateError budget_exceeded',
    make: () => new TollgateError('budget_exceeded', `global week ${SECRET}`, { details: { retry_after_ms: 5000 } }),
    category: 'budget_exceeded', strategy: 'fail_fast', retryable: false, httpStatus: 402,
  },
];

describe('classify: table of real errors', () => {
  it('covers every category with at least 3 cases', () => {
    for (const category of ERROR_CATEGORIES) {
      expect(cases.filter((c) => c.category === category).length).toBeGreaterThanOrEqual(3);
    }
  });

  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const error = c.make();
    expect(error).toBeDefined();
    const result: Classification = classify(error);
    expect(result.category).toBe(c.category);
    expect(result.strategy).toBe(c.strategy);
    expect(result.retryable).toBe(c.retryable);
    expect(result.httpStatus).toBe(c.httpStatus);
    if (c.code) expect(result.code).toBe(c.code);
    if (c.strategies) expect(result.strategies).toEqual(c.strategies);

    expect(result.strategies[0]).toBe(result.strategy);
    for (const s of result.strategies) expect(RECOVERY_STRATEGIES).toContain(s);
    expect(result.code).toMatch(/^[a-z_]+$/);
    expect(result.suggestedActions.length).toBeGreaterThanOrEqual(1);
    expect(result.suggestedActions.length).toBeLessThanOrEqual(3);

    const original = error instanceof Error ? error.message : String(error);
    const visible = [result.userMessage, ...result.suggestedActions].join('\n');
    expect(result.userMessage.length).toBeGreaterThan(10);
    expect(visible).not.toContain(original);
    expect(visible).not.toContain('sk-');
    expect(visible).not.toContain('SECRET');
    expect(visible).not.toMatch(/https?:|:\/\//);
    expect(visible).not.toMatch(/\bat \S+ \(|    at /);
    expect(visible).not.toMatch(/\/srv\/|\.js:\d/);
  });
});

describe('classify: Retry-After', () => {
  const now = Date.parse('2026-10-21T07:28:00Z');
  const rateLimited = (h: Record<string, string>) => new OpenAI.RateLimitError(429, { message: 'x' }, undefined, headers(h));

  it('reads seconds', () => {
    expect(classify(rateLimited({ 'retry-after': '2' })).retryAfterMs).toBe(2000);
    expect(classify(rateLimited({ 'retry-after': '0.5' })).retryAfterMs).toBe(500);
  });

  it('prefers retry-after-ms over retry-after', () => {
    expect(classify(rateLimited({ 'retry-after-ms': '1500', 'retry-after': '9' })).retryAfterMs).toBe(1500);
  });

  it('reads an HTTP date against the clock', () => {
    const c = classify(rateLimited({ 'retry-after': 'Wed, 21 Oct 2026 07:28:30 GMT' }), { now: () => now });
    expect(c.retryAfterMs).toBe(30_000);
    expect(classify(rateLimited({ 'retry-after': 'Wed, 21 Oct 2026 07:27:00 GMT' }), { now: () => now }).retryAfterMs).toBe(0);
  });

  it('caps at 60 s', () => {
    expect(classify(rateLimited({ 'retry-after': '3600' })).retryAfterMs).toBe(60_000);
    expect(classify(rateLimited({ 'retry-after-ms': '120000' })).retryAfterMs).toBe(60_000);
  });

  it('ignores garbage and absence', () => {
    expect(classify(rateLimited({ 'retry-after': 'soon' })).retryAfterMs).toBeUndefined();
    expect(classify(rateLimited({})).retryAfterMs).toBeUndefined();
    expect('retryAfterMs' in classify(rateLimited({}))).toBe(false);
  });

  it('reads plain-object headers, case-insensitively', () => {
    const e = Object.assign(new Error('Too Many Requests'), { status: 429, headers: { 'Retry-After': '3' } });
    expect(classify(e).retryAfterMs).toBe(3000);
    const viaResponse = Object.assign(new Error('x'), { statusCode: 503, response: { headers: { 'retry-after': ['4'] } } });
    const c = classify(viaResponse);
    expect(c.category).toBe('provider_unavailable');
    expect(c.retryAfterMs).toBe(4000);
  });

  it('reads details.retry_after_ms, also through a wrapper', () => {
    const own = new TollgateError('rate_limited', 'x', { details: { retry_after_ms: 1234 } });
    expect(classify(own).retryAfterMs).toBe(1234);
    expect(classify(new Error('wrapped', { cause: own })).retryAfterMs).toBe(1234);
    expect(retryAfterMsOf(own)).toBe(1234);
  });

  it('is not attached to errors that must not be retried', () => {
    const budget = new TollgateError('budget_exceeded', 'x', { details: { retry_after_ms: 5000 } });
    expect(classify(budget).retryAfterMs).toBeUndefined();
    const auth = new OpenAI.AuthenticationError(401, { message: 'x' }, undefined, headers({ 'retry-after': '5' }));
    expect(classify(auth).retryAfterMs).toBeUndefined();
  });
});

describe('classify: cause chain', () => {
  function wrap(inner: unknown, levels: number): unknown {
    let e = inner;
    for (let i = 0; i < levels; i++) e = new Error(`layer ${i}`, { cause: e });
    return e;
  }

  it('finds a network code 5 levels down', () => {
    const c = classify(wrap(nodeError('ECONNREFUSED'), 5));
    expect(c.category).toBe('network');
    expect(c.httpStatus).toBe(502);
  });

  it('stops looking beyond 5 levels', () => {
    expect(classify(wrap(nodeError('ECONNREFUSED'), 6)).code).toBe('internal_error');
  });

  it('uses the outermost recognised error', () => {
    const outer = new ProviderUnavailableError('down', { cause: nodeError('ETIMEDOUT') });
    expect(classify(outer).category).toBe('provider_unavailable');
    expect(classify(new Error('x', { cause: outer })).category).toBe('provider_unavailable');
  });

  it('finds an SDK error under a wrapper', () => {
    const sdk = new OpenAI.RateLimitError(429, { message: 'x' }, undefined, headers({ 'retry-after': '1' }));
    const c = classify(new Error('attempt 3 failed', { cause: sdk }));
    expect(c.category).toBe('rate_limit');
    expect(c.retryAfterMs).toBe(1000);
  });

  it('looks into AggregateError members', () => {
    const agg = new AggregateError([nodeError('ECONNREFUSED'), nodeError('ECONNREFUSED')], 'connect failed');
    expect(classify(new TypeError('fetch failed', { cause: agg })).category).toBe('network');
  });

  it('survives a cause cycle', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    Object.assign(a, { cause: b });
    expect(classify(a).code).toBe('internal_error');
  });

  it('handles null, undefined and plain values', () => {
    for (const v of [null, undefined, 42, {}, []]) {
      const c = classify(v);
      expect(c.code).toBe('internal_error');
      expect(c.httpStatus).toBe(500);
    }
  });
});
