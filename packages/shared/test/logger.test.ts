import { Writable } from 'node:stream';
import { createLogger, isSecretKey, redact, redactString } from '../src/logger';

const OPENAI_KEY = 'sk-proj-Abc123Def456Ghi789Jkl012';
const GOOGLE_KEY = 'AIzaSyD4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T';
const TOLLGATE_KEY = 'tg_live_0123456789abcdefABCDEF';
const BEARER_VALUE = 'eyJhbGciOiJIUzI1NiJ9.cGF5bG9hZA.c2ln';
const PASSWORD = 'hunter2-correct-horse';
const ADMIN_TOKEN = 'admin-secret-value-1234567890';
const COOKIE = 'sid=s3ss10nC00k13Value';
const REDIS_PASSWORD = 'r3d1sPassw0rd';
const ALL_SECRETS = [OPENAI_KEY, GOOGLE_KEY, TOLLGATE_KEY, BEARER_VALUE, PASSWORD, ADMIN_TOKEN, COOKIE, REDIS_PASSWORD];

function capture(level = 'debug') {
  let raw = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      raw += chunk.toString();
      done();
    },
  });
  const logger = createLogger('test-svc', { level, stream });
  return {
    logger,
    async lines(): Promise<{ raw: string; entries: Record<string, unknown>[] }> {
      await new Promise((resolve) => setImmediate(resolve));
      return { raw, entries: raw.trim() ? raw.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) : [] };
    },
  };
}

function expectNoSecrets(raw: string): void {
  for (const secret of ALL_SECRETS) expect(raw).not.toContain(secret);
}

describe('createLogger', () => {
  it('writes JSON lines with timestamp, level, service, message and meta', async () => {
    const { logger, lines } = capture();
    logger.info('started', { port: 8080, request_id: 'req-1' });
    const { entries } = await lines();
    expect(entries).toHaveLength(1);
    expect(entries[0]).toEqual({
      level: 'info',
      message: 'started',
      service: 'test-svc',
      port: 8080,
      request_id: 'req-1',
      timestamp: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
    });
  });

  it('filters by level and keeps the service field authoritative', async () => {
    const { logger, lines } = capture('warn');
    logger.info('dropped');
    logger.warn('kept', { service: 'spoofed' });
    const { entries } = await lines();
    expect(entries.map((e) => [e.level, e.message, e.service])).toEqual([['warn', 'kept', 'test-svc']]);
  });

  it('rejects an unknown level', () => {
    expect(() => createLogger('x', { level: 'loudest' })).toThrow('Unknown log level "loudest"');
  });

  it('redacts secrets in the message', async () => {
    const { logger, lines } = capture();
    logger.info(`calling openai with ${OPENAI_KEY}, gemini ?key=${GOOGLE_KEY}, client ${TOLLGATE_KEY}, Authorization: Bearer ${BEARER_VALUE}`);
    const { raw, entries } = await lines();
    expectNoSecrets(raw);
    expect(entries[0]?.message).toBe(
      'calling openai with [REDACTED], gemini ?key=[REDACTED], client [REDACTED], Authorization: Bearer [REDACTED]',
    );
  });

  it('redacts secret-named fields and secrets inside strings anywhere in meta', async () => {
    const { logger, lines } = capture();
    logger.info('provider call', {
      apiKey: OPENAI_KEY,
      request_id: 'req-42',
      headers: {
        Authorization: `Bearer ${BEARER_VALUE}`,
        'x-goog-api-key': GOOGLE_KEY,
        'X-Api-Key': TOLLGATE_KEY,
        Cookie: COOKIE,
        'content-type': 'application/json',
      },
      config: {
        redisUrl: `redis://:${REDIS_PASSWORD}@redis:6379`,
        adminToken: ADMIN_TOKEN,
        providers: { openai: { apiKey: OPENAI_KEY, baseUrl: 'https://api.openai.com/v1', stub: false } },
      },
      attempts: [{ note: `retry with ${OPENAI_KEY}`, status: 429 }, [{ password: PASSWORD, user: 'alice' }]],
      usage: { input_tokens: 12, output_tokens: 34, model_key: 'openai/gpt-4o-mini' },
    });
    const { raw, entries } = await lines();
    expectNoSecrets(raw);
    expect(entries[0]).toMatchObject({
      message: 'provider call',
      apiKey: '[REDACTED]',
      request_id: 'req-42',
      headers: {
        Authorization: '[REDACTED]',
        'x-goog-api-key': '[REDACTED]',
        'X-Api-Key': '[REDACTED]',
        Cookie: '[REDACTED]',
        'content-type': 'application/json',
      },
      config: {
        redisUrl: 'redis://:[REDACTED]@redis:6379',
        adminToken: '[REDACTED]',
        providers: { openai: { apiKey: '[REDACTED]', baseUrl: 'https://api.openai.com/v1', stub: false } },
      },
      attempts: [{ note: 'retry with [REDACTED]', status: 429 }, [{ password: '[REDACTED]', user: 'alice' }]],
      usage: { input_tokens: 12, output_tokens: 34, model_key: 'openai/gpt-4o-mini' },
    });
  });

  it('redacts error messages, stacks, causes and error fields (error as meta)', async () => {
    const { logger, lines } = capture();
    const cause = new Error(`socket closed for ${TOLLGATE_KEY}`);
    const err = Object.assign(new Error(`401 Incorrect API key provided: ${OPENAI_KEY}`, { cause }), {
      status: 401,
      headers: { authorization: `Bearer ${BEARER_VALUE}`, 'x-request-id': 'abc' },
    });
    logger.error('chat failed', err);
    const { raw, entries } = await lines();
    expectNoSecrets(raw);
    const entry = entries[0] ?? {};
    expect(entry.message).toBe('chat failed 401 Incorrect API key provided: [REDACTED]');
    expect(entry.stack).toEqual(expect.stringContaining('Error: 401 Incorrect API key provided: [REDACTED]\n    at '));
    expect(entry.status).toBe(401);
    expect(entry.headers).toEqual({ authorization: '[REDACTED]', 'x-request-id': 'abc' });
    expect(entry.cause).toMatchObject({ name: 'Error', message: 'socket closed for [REDACTED]' });
  });

  it('redacts an Error logged on its own and one nested in meta', async () => {
    const { logger, lines } = capture();
    logger.error(new Error(`bad key ${GOOGLE_KEY}`));
    const nested = new TypeError(`fetch failed: Bearer ${BEARER_VALUE}`);
    logger.warn('retrying', { err: nested, attempt: 2 });
    const { raw, entries } = await lines();
    expectNoSecrets(raw);
    expect(entries[0]).toMatchObject({ level: 'error', message: 'bad key [REDACTED]' });
    expect(String(entries[0]?.stack)).toMatch(/^Error: bad key \[REDACTED\]\n/);
    expect(entries[1]).toMatchObject({
      message: 'retrying',
      attempt: 2,
      err: { name: 'TypeError', message: 'fetch failed: Bearer [REDACTED]' },
    });
    expect(String((entries[1]?.err as { stack?: unknown }).stack)).toMatch(/^TypeError: fetch failed: Bearer \[REDACTED\]\n/);
  });

  it('survives cycles and does not mutate what the caller logged', async () => {
    const { logger, lines } = capture();
    const meta: Record<string, unknown> = { token: TOLLGATE_KEY, name: 'loop', list: [] as unknown[] };
    meta.self = meta;
    (meta.list as unknown[]).push(meta);
    const single = { message: `single ${OPENAI_KEY}`, secret: PASSWORD, keep: true };
    logger.info('cyclic', meta);
    logger.info(single);
    const { raw, entries } = await lines();
    expectNoSecrets(raw);
    // Winston copies meta into a new info object, so the cycle is cut one level down.
    expect(entries[0]).toMatchObject({
      token: '[REDACTED]',
      name: 'loop',
      self: { token: '[REDACTED]', name: 'loop', self: '[Circular]', list: ['[Circular]'] },
      list: [{ token: '[REDACTED]', name: 'loop', self: '[Circular]', list: '[Circular]' }],
    });
    expect(redact(meta)).toEqual({ token: '[REDACTED]', name: 'loop', self: '[Circular]', list: ['[Circular]'] });
    expect(entries[1]).toMatchObject({ message: 'single [REDACTED]', secret: '[REDACTED]', keep: true });
    expect(meta.token).toBe(TOLLGATE_KEY);
    expect(single.secret).toBe(PASSWORD);
    expect(single.message).toBe(`single ${OPENAI_KEY}`);
  });

  it('redacts child logger metadata', async () => {
    const { logger, lines } = capture();
    logger.child({ api_key: TOLLGATE_KEY, user_id: 'u-1' }).info('from child');
    const { raw, entries } = await lines();
    expectNoSecrets(raw);
    expect(entries[0]).toMatchObject({ api_key: '[REDACTED]', user_id: 'u-1', message: 'from child', service: 'test-svc' });
  });
});

describe('redact', () => {
  it('returns a redacted copy and leaves the input untouched', () => {
    const input = { headers: { authorization: 'Bearer abc.def' }, list: [{ secret: 's', n: 1 }], text: `key ${OPENAI_KEY}` };
    const before = structuredClone(input);
    const out = redact(input);
    expect(out).toEqual({ headers: { authorization: '[REDACTED]' }, list: [{ secret: '[REDACTED]', n: 1 }], text: 'key [REDACTED]' });
    expect(input).toEqual(before);
    expect(out).not.toBe(input);
  });

  it.each([
    ['authorization', true],
    ['Proxy-Authorization', true],
    ['set-cookie', true],
    ['x-goog-api-key', true],
    ['apiKey', true],
    ['API_KEY', true],
    ['api-key', true],
    ['OPENAI_API_KEY', true],
    ['adminToken', true],
    ['access_token', true],
    ['refresh_token', true],
    ['client_secret', true],
    ['webhookSecret', true],
    ['password', true],
    ['token', true],
    ['input_tokens', false],
    ['max_tokens', false],
    ['promptTokenCount', false],
    ['model_key', false],
    ['cache_key', false],
    ['key', false],
    ['monkey', false],
    ['api_key_id', false],
  ])('key %s secret=%s', (key, secret) => {
    expect(isSecretKey(key)).toBe(secret);
  });

  it.each([
    [`Bearer ${BEARER_VALUE}`, 'Bearer [REDACTED]'],
    [`bearer ${BEARER_VALUE}`, 'Bearer [REDACTED]'],
    [`{"Authorization":"Bearer ${BEARER_VALUE}"}`, '{"Authorization":"Bearer [REDACTED]"}'],
    [`key=${OPENAI_KEY}&x=1`, 'key=[REDACTED]&x=1'],
    [`https://x.test/v1?alt=sse&key=plainvalue`, 'https://x.test/v1?alt=sse&key=[REDACTED]'],
    [`https://user:pa55@proxy.test/v1`, 'https://user:[REDACTED]@proxy.test/v1'],
    [`(${GOOGLE_KEY})`, '([REDACTED])'],
    [`tg key: ${TOLLGATE_KEY}.`, 'tg key: [REDACTED].'],
    // Look-alikes that are not keys stay readable.
    ['task-12345678 risk-assessment sk-short', 'task-12345678 risk-assessment sk-short'],
    ['my_tg_0123456789abcdefgh', 'my_tg_0123456789abcdefgh'],
    ['AIza-too-short', 'AIza-too-short'],
  ])('string %s', (input, expected) => {
    expect(redactString(input)).toBe(expected);
  });

  it('summarises binary data and converts Map, Set, URL and Date', () => {
    const out = redact({
      image: Buffer.from('pretend-png'),
      map: new Map<string, unknown>([
        ['token', 'x'],
        ['ok', `sk-${'a'.repeat(20)}`],
      ]),
      set: new Set(['plain', `tg_${'b'.repeat(20)}`]),
      url: new URL(`https://api.test/v1?key=${GOOGLE_KEY}`),
      at: new Date('2026-01-01T00:00:00Z'),
    });
    expect(out).toEqual({
      image: '[binary 11 bytes]',
      map: { token: '[REDACTED]', ok: '[REDACTED]' },
      set: ['plain', '[REDACTED]'],
      url: 'https://api.test/v1?key=[REDACTED]',
      at: new Date('2026-01-01T00:00:00Z'),
    });
  });

  it('keeps primitives and null-valued secret fields as they are', () => {
    expect(redact(42)).toBe(42);
    expect(redact(null)).toBeNull();
    expect(redact(undefined)).toBeUndefined();
    expect(redact({ apiKey: undefined, token: null, count: 3 })).toEqual({ apiKey: undefined, token: null, count: 3 });
  });
});
