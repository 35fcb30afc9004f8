import { gzipSync } from 'node:zlib';
import { namespaceGlobs, VISION_PROMPT_MAX_CHARS } from '@tollgate/shared';
import { keysMatching } from '@tollgate/shared/src/testing';
import {
  deepJson,
  fuzzSeed,
  malformedJson,
  NASTY_STRINGS,
  POLLUTION_KEYS,
  pollutionPayload,
  prng,
  prototypeSnapshot,
  randomJson,
  randomObject,
  randomString,
  type Rng,
} from '@tollgate/shared/test/fuzz-kit';
import { png1x1 } from '@tollgate/vision/test/images';
import { type FullSystem, startFullSystem } from './full-harness';
import { errorShapeProblems, headerBytes, httpClient, type RawRequest, type RawResponse } from './http-kit';

/**
 * Bad input over every HTTP endpoint: random and malformed bodies, wrong types, huge strings,
 * deep nesting, unicode (lone surrogates, RTL, emoji, NUL), prototype-pollution keys, wrong
 * content types and encodings, bad query strings, bad path parameters and bad credentials. Every
 * answer must be a 4xx in the one error shape, never a 5xx, and nothing may be written: no job,
 * no event, no ledger entry, no budget, no key; the whole keyspace is compared before and after.
 *
 * Seeded: a failure prints its seed and case; `FUZZ_SEED=<n>` repeats a run, `FUZZ_SCALE=<x>`
 * multiplies the number of cases, `FUZZ_VERBOSE=1` prints whole bodies of failing cases and
 * `FUZZ_TIMING=1` the slowest cases and families.
 */

const SEED = fuzzSeed(0x70116a7e);
const SCALE = Math.max(0.1, Number(process.env.FUZZ_SCALE ?? 1) || 1);
const n = (count: number) => Math.max(1, Math.round(count * SCALE));
const MARKER = `tollgatePolluted${SEED}`;
const PNG = png1x1([10, 20, 30]);

let sys: FullSystem;
let client: ReturnType<typeof httpClient>;
const ids = { victimKeyId: '', victimKeyHash: '', victimSilence: '' };
const creds = { user: '', chatOnly: '', costsOnly: '', visionOnly: '', adminKey: '', revoked: '' };
let admin: Record<string, string>;

interface Case {
  family: string;
  req: RawRequest;
  /** Statuses this case may answer with; every one must be a 4xx unless `reads` says otherwise. */
  allowed: readonly number[];
  /** The endpoint ignores this input and may answer 2xx (only reads). */
  reads?: boolean;
  /** Refused by Node's HTTP parser before the app: only the status is checked. */
  bare?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers

/** Percent-encodes the UTF-8 bytes of `s` (a lone surrogate becomes U+FFFD, as on any wire). */
function enc(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._~-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** A header value Node will put on the wire: UTF-8 bytes as latin1, minus the bytes HTTP forbids. */
function headerValue(s: string): string {
  return headerBytes(s).replace(/[^\t\x20-\x7e\x80-\xff]/g, '').slice(0, 4 * HEAD_BUDGET);
}

const json = (v: unknown) => JSON.stringify(v);
const JSON_TYPE = { 'content-type': 'application/json' };

/** Raw path segments that break decoders: malformed escapes, encoded lone surrogates, traversal, NUL. */
const RAW_SEGMENTS = [
  '%', '%%', '%zz', '%E0%A4%A', '%C0%AF', '%00', '%2F', '%5C', '..', '.', '%2e%2e', '%uD800', '%ED%A0%80', '%FF%FE',
  '%F0%9F%92%A5', '%E2%80%AE', '__proto__', 'constructor', 'prototype', 'a'.repeat(5_000), '%0D%0ASet-Cookie:%20x=1',
];

/**
 * Node refuses a request head over 16 KB with a bare 431 before the app sees it (covered once, on
 * its own, below); generated paths, queries and headers stay under that so the app is what answers.
 */
const HEAD_BUDGET = 1_500;

function randomSegment(r: Rng): string {
  return r.chance(0.4) ? r.pick(RAW_SEGMENTS) : enc(randomString(r, 30)).slice(0, HEAD_BUDGET) || '%20';
}

/** A value that fails `^[A-Za-z0-9._-]{1,64}$` (and most id rules), percent-encoded for a path. */
function invalidIdSegment(r: Rng): string {
  const bad = r.pick([
    () => `${enc(randomString(r, 10)).slice(0, HEAD_BUDGET)}%20x`,
    () => 'a'.repeat(65 + r.int(0, 500)),
    () => r.pick(['%', '%zz', '%E0%A4%A', '%00', '%2F', '%ED%A0%80', '%3A', 'a%3Ab', '%7Btollgate%7D', '%2A', 'x%0Ay']),
    () => enc(r.pick(NASTY_STRINGS.filter((s) => /[^A-Za-z0-9._-]/.test(s) && s !== ''))),
    () => `ok${enc(r.pick(['💥', '\u202e', '\u0000', '/', ':', ' ', '\ud800']))}`,
  ]);
  return bad();
}

// ---------------------------------------------------------------------------------------------
// Endpoints and what they accept

interface Endpoint {
  method: string;
  path: string;
  scope: 'chat' | 'vision' | 'costs' | 'admin';
  /** A body the endpoint would accept: sent with bad credentials, it must still write nothing. */
  body?: unknown;
}

function endpoints(): Endpoint[] {
  return [
    { method: 'POST', path: '/v1/chat', scope: 'chat', body: { message: 'hello', conversation_id: 'conv-1', model: 'gpt-4o-mini' } },
    { method: 'POST', path: '/v1/chat/completions', scope: 'chat', body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] } },
    { method: 'POST', path: '/v1/vision', scope: 'vision', body: { image_base64: PNG.toString('base64'), prompt: 'What is it?' } },
    { method: 'GET', path: '/v1/costs/summary?period=day', scope: 'costs' },
    { method: 'GET', path: '/v1/costs/entries?limit=5', scope: 'costs' },
    { method: 'GET', path: '/v1/costs/entries.csv', scope: 'costs' },
    { method: 'GET', path: '/v1/costs/reports/day', scope: 'admin' },
    { method: 'GET', path: '/v1/costs/recommendations', scope: 'admin' },
    { method: 'GET', path: '/v1/costs/dead-letters', scope: 'admin' },
    { method: 'POST', path: '/v1/admin/keys', scope: 'admin', body: { name: 'n', user_id: 'intruder', project_id: 'p', scopes: ['admin'] } },
    { method: 'GET', path: '/v1/admin/keys', scope: 'admin' },
    { method: 'DELETE', path: `/v1/admin/keys/${ids.victimKeyId}`, scope: 'admin' },
    { method: 'GET', path: '/v1/budgets', scope: 'admin' },
    { method: 'GET', path: '/v1/budgets/user/victim', scope: 'admin' },
    { method: 'PUT', path: '/v1/budgets/user/victim', scope: 'admin', body: { periods: [{ period: 'day', limit_micros: 1, mode: 'hard' }] } },
    { method: 'DELETE', path: '/v1/budgets/user/victim', scope: 'admin' },
    { method: 'GET', path: '/v1/alerts', scope: 'costs' },
    { method: 'GET', path: '/v1/alerts/stream', scope: 'costs' },
    { method: 'GET', path: '/v1/alerts/alert-1', scope: 'costs' },
    { method: 'GET', path: '/v1/alerts/webhooks', scope: 'admin' },
    { method: 'GET', path: '/v1/alerts/webhooks/dead-letters', scope: 'admin' },
    { method: 'PUT', path: '/v1/alerts/webhooks/victim-hook', scope: 'admin', body: { url: 'http://127.0.0.1:9/stolen' } },
    { method: 'DELETE', path: '/v1/alerts/webhooks/victim-hook', scope: 'admin' },
    { method: 'GET', path: '/v1/alerts/silences', scope: 'admin' },
    { method: 'POST', path: '/v1/alerts/silences', scope: 'admin', body: { matchers: { scope: 'global' }, duration_minutes: 60 } },
    { method: 'DELETE', path: `/v1/alerts/silences/${ids.victimSilence}`, scope: 'admin' },
    { method: 'GET', path: '/v1/ops/status', scope: 'admin' },
    { method: 'GET', path: '/v1/events/stream', scope: 'admin' },
  ];
}

// ---------------------------------------------------------------------------------------------
// Family: credentials. A valid request with a bad key is 401; with a key lacking the scope, 403.

function badCredentials(r: Rng): Record<string, string> {
  const key = creds.user;
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  const gen = r.pick<() => Record<string, string>>([
    () => ({}),
    () => ({ authorization: '' }),
    () => ({ authorization: 'Bearer' }),
    () => ({ authorization: 'Bearer ' }),
    () => ({ authorization: headerValue(randomString(r, 80)) }),
    () => ({ authorization: `Bearer ${headerValue(randomString(r, 80)).replace(/\s/g, '') || 'x'}` }),
    () => ({ authorization: `Bearer tg_${Buffer.from(Array.from({ length: 32 }, () => r.int(0, 255))).toString('base64url')}` }),
    () => ({ authorization: `Bearer ${flip(key, r.int(3, key.length - 1))}` }),
    () => ({ authorization: `Bearer ${key}x` }),
    () => ({ authorization: `Bearer ${key.slice(0, -1)}` }),
    () => ({ authorization: `Bearer ${key.toUpperCase()}` }),
    () => ({ authorization: `Bearer ${key} ${key}` }),
    () => ({ authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}` }),
    () => ({ authorization: `Token ${key}` }),
    () => ({ authorization: `Bearer ${creds.revoked}` }),
    () => ({ authorization: `Bearer ${ids.victimKeyHash}` }), // what Redis holds is not a key
    () => ({ authorization: `Bearer ${ids.victimKeyId}` }),
    () => ({ authorization: `Bearer tg_${'A'.repeat(r.int(190, 6_000))}` }),
    () => ({ authorization: `Bearer ${sys.adminToken}x` }),
    () => ({ authorization: `Bearer ${sys.adminToken.slice(0, -1)}` }),
    () => ({ authorization: `Bearer ${sys.adminToken.toUpperCase()}` }),
    () => ({ 'x-api-key': headerValue(randomString(r, 60)) }),
    () => ({ 'x-api-key': creds.revoked }),
    () => ({ 'x-api-key': `${sys.adminToken}.` }),
    () => ({ authorization: `Bearer ${headerBytes('tg_💥\u202e')}` }),
    () => ({ cookie: `key=${key}`, 'x-forwarded-user': 'admin' }),
  ]);
  return gen();
}

function credentialCases(r: Rng): Case[] {
  const cases: Case[] = [];
  for (const ep of endpoints()) {
    const base: RawRequest = {
      method: ep.method,
      path: ep.path,
      ...(ep.body !== undefined && { body: json(ep.body) }),
    };
    for (let i = 0; i < n(16); i++) {
      cases.push({ family: 'credentials', req: { ...base, headers: { ...(ep.body !== undefined && JSON_TYPE), ...badCredentials(r) } }, allowed: [401] });
    }
    // Real keys without the scope the endpoint needs.
    const lacking = [creds.chatOnly, creds.costsOnly, creds.visionOnly, creds.user].filter((k) => {
      const scopes: Record<string, string[]> = {
        [creds.chatOnly]: ['chat'],
        [creds.costsOnly]: ['costs'],
        [creds.visionOnly]: ['vision'],
        [creds.user]: ['chat', 'vision', 'costs'],
      };
      return !scopes[k]!.includes(ep.scope);
    });
    for (const k of lacking) {
      cases.push({ family: 'scope', req: { ...base, headers: { ...(ep.body !== undefined && JSON_TYPE), authorization: `Bearer ${k}` } }, allowed: [403] });
    }
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Family: bodies. Every JSON endpoint, with a template it accepts and values each field refuses.

const NOT_STRING = [1, -1, 0, 1.5, true, false, null, [], {}, ['x'], { a: 'x' }];
const NOT_INT = ['1', 1.5, -1, 0, true, null, [], {}, 'abc', Number.MAX_SAFE_INTEGER + 2];
const BAD_ID = ['', 'a'.repeat(65), 'has space', 'colon:in', 'slash/in', '💥', '\u0000', '\ud800', 'מזהה', '{tag}', '*'];

interface BodySpec {
  path: string;
  method: string;
  /** Accepted as is. */
  template: Record<string, unknown>;
  /** Field -> values that field refuses (whatever the other fields are). */
  invalid: Record<string, unknown[]>;
  /** Unknown keys are refused (z.strictObject); otherwise a random object gets an invalid model. */
  strict: boolean;
  limit: number;
}

function bodySpecs(): BodySpec[] {
  const MB = 1024 * 1024;
  return [
    {
      method: 'POST',
      path: '/v1/chat',
      template: { message: 'hello', conversation_id: 'c-1', model: 'gpt-4o-mini' },
      invalid: {
        message: [...NOT_STRING, '', 'x'.repeat(32_001)],
        conversation_id: [...NOT_STRING, ...BAD_ID],
        model: [...NOT_STRING, '', 'x'.repeat(129), 'gpt-99-ultra', 'deepseek-vl2', '__proto__', 'constructor', 'toString', 'hasOwnProperty', '../gpt-4o-mini', 'gpt-4o-mini\u0000', ' gpt-4o-mini', 'GPT-4O-MINI', 'openai/gpt-4o-mini'],
      },
      strict: true,
      limit: MB,
    },
    {
      method: 'POST',
      path: '/v1/chat/completions',
      template: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] },
      invalid: {
        model: [...NOT_STRING, '', 'x'.repeat(129), 'gpt-99-ultra', 'deepseek-vl2', '__proto__', 'constructor', 'valueOf', 'gpt-4o-mini ', 'gemini/gemini-2.0-flash'],
        messages: [
          ...NOT_STRING.filter((v) => !Array.isArray(v) || v.length > 0),
          [],
          [{}],
          [{ role: 'user' }],
          [{ role: 'tool', content: 'x' }],
          [{ role: '__proto__', content: 'x' }],
          [{ role: 'user', content: 5 }],
          [{ role: 'user', content: [] }],
          [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://127.0.0.1/x.png' } }] }],
          [{ role: 'user', content: [{ type: 'text', text: 1 }] }],
          [{ role: 'user', content: 'x', name: 'n'.repeat(65) }],
          [{ role: 'user', content: 'x'.repeat(200_001) }],
          Array.from({ length: 501 }, () => ({ role: 'user', content: 'x' })),
          [null],
          [[{ role: 'user', content: 'x' }]],
        ],
        stream: ['true', 1, {}, [], 'yes'],
        stream_options: ['x', 1, [], { include_usage: 'yes' }, true],
        max_tokens: NOT_INT.concat([100_001]).filter((v) => v !== null),
        max_completion_tokens: NOT_INT.concat([100_001]).filter((v) => v !== null),
        n: [2, 0, '1', true, -1, 1.5],
      },
      strict: false,
      limit: MB,
    },
    {
      method: 'POST',
      path: '/v1/vision',
      template: { image_base64: PNG.toString('base64'), prompt: 'What is it?' },
      invalid: {
        image_base64: [
          ...NOT_STRING,
          '',
          '!!!!',
          'A',
          '====',
          'data:image/png;base64,@@@@',
          'data:image/png;base64,',
          Buffer.from('not an image at all, just words').toString('base64'),
          Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>').toString('base64'),
          `data:text/html;base64,${Buffer.from('<script>alert(1)</script>').toString('base64')}`,
          PNG.subarray(0, 20).toString('base64'),
          PNG.subarray(0, 4).toString('base64'),
          Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10]).toString('base64'),
          'GIF89a',
          `${PNG.toString('base64')}💥`,
          `${PNG.toString('base64')}\u0000`,
        ],
        prompt: [...NOT_STRING, '', '   ', '\n\t', 'x'.repeat(VISION_PROMPT_MAX_CHARS + 1)],
        quality: [...NOT_STRING, '', 'ultra', 'HIGH', '__proto__', 'standard '],
      },
      strict: true,
      limit: 12 * MB, // the vision JSON limit is sized for base64 of an 8 MB image
    },
    {
      method: 'POST',
      path: '/v1/admin/keys',
      template: { name: 'fuzz-created', user_id: 'u-1', project_id: 'p-1', scopes: ['chat'] },
      invalid: {
        name: [...NOT_STRING.filter((v) => v !== null), '', 'x'.repeat(101)],
        user_id: [...NOT_STRING, ...BAD_ID],
        project_id: [...NOT_STRING, ...BAD_ID],
        scopes: [[], ['root'], 'admin', [1], ['admin', '__proto__'], {}, [null], [['admin']], null, 'chat,vision'],
      },
      strict: true,
      limit: MB,
    },
    {
      method: 'PUT',
      path: '/v1/budgets/user/fuzz-target',
      template: { periods: [{ period: 'day', limit_micros: 1_000 }] },
      invalid: {
        periods: [
          ...NOT_STRING.filter((v) => !Array.isArray(v)),
          [],
          [{}],
          [{ period: 'year', limit_micros: 1 }],
          [{ period: 'day', limit_micros: -1 }],
          [{ period: 'day', limit_micros: 1.5 }],
          [{ period: 'day', limit_micros: '1000' }],
          [{ period: 'day', limit_micros: 0 }],
          [{ period: 'day', limit_micros: Number.MAX_SAFE_INTEGER + 2 }],
          [{ period: 'day', limit_micros: 1e300 }],
          [{ period: 'day', limit_micros: 1 }, { period: 'day', limit_micros: 2 }],
          [{ period: 'day', limit_micros: 1 }, { period: 'week', limit_micros: 1 }, { period: 'month', limit_micros: 1 }, { period: 'day', limit_micros: 1 }],
          [{ period: 'day', limit_micros: 1, mode: 'strict' }],
          [{ period: 'day', limit_micros: 1, thresholds_pct: [0] }],
          [{ period: 'day', limit_micros: 1, thresholds_pct: [1001] }],
          [{ period: 'day', limit_micros: 1, thresholds_pct: [] }],
          [{ period: 'day', limit_micros: 1, thresholds_pct: Array.from({ length: 11 }, (_, i) => i + 1) }],
          [{ period: 'day', limit_micros: 1, thresholds_pct: [50.5] }],
          [{ period: 'day', limit_micros: 1, extra: true }],
          [JSON.parse('{"period":"day","limit_micros":1,"__proto__":{"mode":"hard"}}')],
        ],
      },
      strict: true,
      limit: MB,
    },
    {
      method: 'PUT',
      path: '/v1/alerts/webhooks/fuzz-hook',
      template: { url: 'http://127.0.0.1:9/hook', secret: 'a-secret-of-at-least-16' },
      invalid: {
        url: [...NOT_STRING, '', 'ftp://127.0.0.1/x', 'javascript:alert(1)', 'file:///etc/passwd', 'not a url', '//no-scheme', `http://${'a'.repeat(2_048)}.com`, 'data:text/plain,hi'],
        secret: [...NOT_STRING.filter((v) => v !== null), 'short', 'x'.repeat(257)],
      },
      strict: true,
      limit: MB,
    },
    {
      method: 'POST',
      path: '/v1/alerts/silences',
      template: { matchers: { scope: 'user', scope_id: 'fuzz-silenced' }, duration_minutes: 60, comment: 'fuzz' },
      invalid: {
        matchers: [
          ...NOT_STRING.filter((v) => typeof v !== 'object' || Array.isArray(v) || v === null),
          {},
          { scope: 'team' },
          { scope_id: '' },
          { threshold_pct: 0 },
          { threshold_pct: 1.5 },
          { kind: 'both' },
          { alert: 'disk_full' },
          { fingerprint: 'f'.repeat(129) },
          { scope: 'user', extra: 1 },
          { scope: undefined },
          JSON.parse('{"__proto__":{"scope":"global"}}'),
        ],
        duration_minutes: [0, -1, 1.5, 90 * 24 * 60 + 1, '60', null, true, [], {}],
        ends_at: ['yesterday', '2020-01-01T00:00:00Z', '2999-01-01T00:00:00Z', 'x', 1, null, new Date(Date.now() + 3_600_000).toISOString()],
        comment: ['x'.repeat(501), 1, null, [], {}],
      },
      strict: true,
      limit: MB,
    },
  ];
}

/** One field or several replaced by values they refuse. */
function withInvalidFields(r: Rng, spec: BodySpec, count: number): Record<string, unknown> {
  const out: Record<string, unknown> = { ...spec.template };
  const fields = Object.keys(spec.invalid);
  for (let i = 0; i < count; i++) {
    const f = r.pick(fields);
    out[f] = r.pick(spec.invalid[f]!);
  }
  return out;
}

/** Makes sure a random object is refused: an unknown key for strict bodies, an unknown model otherwise. */
function spoil(r: Rng, spec: BodySpec, body: Record<string, unknown>): Record<string, unknown> {
  if (spec.strict) {
    const key = r.chance(0.5) ? r.pick(POLLUTION_KEYS) : `zz_${randomString(r, 8)}`;
    Object.defineProperty(body, key, { value: randomJson(r), enumerable: true, configurable: true, writable: true });
  } else {
    body.model = r.pick(spec.invalid.model!);
  }
  return body;
}

function bodyCases(r: Rng): Case[] {
  const cases: Case[] = [];
  const auth = (spec: BodySpec) => ({ authorization: `Bearer ${spec.path.startsWith('/v1/chat') || spec.path === '/v1/vision' ? creds.user : sys.adminToken}` });
  const add = (spec: BodySpec, body: string | Buffer, headers: Record<string, string> = JSON_TYPE, allowed: readonly number[] = [400, 413, 415]) =>
    cases.push({ family: 'body', req: { method: spec.method, path: spec.path, headers: { ...auth(spec), ...headers }, body }, allowed });

  for (const spec of bodySpecs()) {
    const fieldNames = Object.keys(spec.invalid);
    for (let i = 0; i < n(110); i++) {
      const kind = r.int(0, 11);
      switch (kind) {
        case 0: // not an object at all
          add(spec, json(r.pick([null, true, 0, -1, 'text', [], [spec.template], randomString(r), 1e308])));
          break;
        case 1:
        case 2: // a random object of the right field names and random values
          add(spec, json(spoil(r, spec, randomObject(r, fieldNames))));
          break;
        case 3:
        case 4: // the template with fields made invalid
          add(spec, json(withInvalidFields(r, spec, r.int(1, 3))));
          break;
        case 5: {
          // prototype-pollution keys at the top or inside a field
          const body: Record<string, unknown> = { ...spec.template };
          const payload = pollutionPayload(MARKER);
          const target = r.pick(fieldNames);
          body[target] = r.chance(0.5) ? payload : [payload];
          if (!spec.strict) body.model = r.pick(spec.invalid.model!);
          let text = json(body);
          if (spec.strict) text = text.replace(/^\{/, `{"__proto__":{"${MARKER}":1},"constructor":{"prototype":{"${MARKER}":1}},`);
          add(spec, text);
          break;
        }
        case 6: {
          // deep nesting in a field the schema checks
          const field = spec.strict ? r.pick(fieldNames) : 'model';
          const depth = r.pick([64, 1_000, 10_000, 100_000]);
          add(spec, json({ ...spec.template, [field]: '@@DEEP@@' }).replace('"@@DEEP@@"', deepJson(depth, r.chance(0.5) ? 'array' : 'object')));
          break;
        }
        case 7:
          add(spec, malformedJson(r));
          break;
        case 8: {
          // a valid body under a content type this endpoint does not parse as JSON
          const type = r.pick([
            'text/plain',
            'application/x-www-form-urlencoded',
            'application/xml',
            'application/json-patch+json',
            'application/javascript',
            'multipart/form-data',
            'multipart/mixed; boundary=x',
            'image/png',
            'application/octet-stream',
            'application/json; charset=latin1',
            'application/json; charset=utf-16',
            'application/json; charset=ebcdic',
            '*/*',
            'application/*',
            headerValue(randomString(r, 30)) || 'x/y',
          ]);
          add(spec, json(spec.template), type ? { 'content-type': type } : {});
          break;
        }
        case 9: {
          // content encodings: unknown ones, and gzip that is not gzip or inflates to a refused body
          const which = r.int(0, 4);
          if (which === 0) add(spec, json(spec.template), { ...JSON_TYPE, 'content-encoding': r.pick(['br', 'compress', 'x-custom', 'gzip, br', 'identity, gzip']) });
          else if (which === 1) add(spec, Buffer.from(randomString(r, 60)), { ...JSON_TYPE, 'content-encoding': r.pick(['gzip', 'deflate']) });
          else if (which === 2) add(spec, gzipSync(Buffer.from(malformedJson(r))), { ...JSON_TYPE, 'content-encoding': 'gzip' });
          else if (which === 3) add(spec, gzipSync(Buffer.from(json(withInvalidFields(r, spec, 1)))), { ...JSON_TYPE, 'content-encoding': 'gzip' });
          else add(spec, gzipSync(Buffer.from(json(spec.template))).subarray(0, 12), { ...JSON_TYPE, 'content-encoding': 'gzip' });
          break;
        }
        case 10: // raw bytes that are not UTF-8 text
          add(spec, Buffer.from(Array.from({ length: r.int(1, 200) }, () => r.int(0, 255))));
          break;
        default: {
          // huge strings in fields, under the size limit; all refused for their length or value
          // (every top-level field of these bodies refuses a 33k+ string: too long, bad id, unknown model, not base64 of an image)
          const body: Record<string, unknown> = { ...spec.template };
          body[r.pick(fieldNames)] = r.pick(['x', '💥', '\u0000', '\ud800', 'ש']).repeat(r.int(33_000, 60_000));
          add(spec, json(body));
        }
      }
    }
    // Past the size limit, and a gzip bomb: refused with 413 without buffering it all.
    const MB = 1024 * 1024;
    const huge = spec.limit + 64 * 1024;
    add(spec, `{"${fieldNames[0]}":"${'a'.repeat(huge)}"}`, JSON_TYPE, [413]);
    // (not for vision: inflating 12 MB costs seconds, and the parser and limit are the same code)
    if (spec.limit <= MB) add(spec, gzipSync(Buffer.from(`{"${fieldNames[0]}":"${'a'.repeat(huge)}"}`)), { ...JSON_TYPE, 'content-encoding': 'gzip' }, [413]);
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Family: vision uploads (multipart and raw bodies).

function multipart(parts: Array<{ name: string; filename?: string; type?: string; data: string | Buffer }>, boundary = 'fuzzBoundary7MA4YWxk'): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${p.type ? `Content-Type: ${p.type}\r\n` : ''}\r\n`, 'latin1'));
    chunks.push(Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data, 'utf8'));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

function visionCases(r: Rng): Case[] {
  const cases: Case[] = [];
  const auth = () => ({ authorization: `Bearer ${creds.user}` });
  const mp = (body: Buffer, boundary = 'fuzzBoundary7MA4YWxk', allowed: readonly number[] = [400, 413, 415]) =>
    cases.push({ family: 'vision-upload', req: { method: 'POST', path: '/v1/vision', headers: { ...auth(), 'content-type': `multipart/form-data; boundary=${boundary}` }, body }, allowed });
  const image = (data: Buffer = PNG, name = 'image') => ({ name, filename: headerValue(randomString(r, 20)) || 'a.png', type: 'image/png', data });
  const randomBytes = (len: number) => Buffer.from(Array.from({ length: len }, () => r.int(0, 255)));

  for (let i = 0; i < n(90); i++) {
    const kind = r.int(0, 9);
    if (kind === 0) mp(multipart([image(randomBytes(r.int(1, 2_000))), { name: 'prompt', data: 'What?' }]));
    else if (kind === 1) mp(multipart([image(r.pick([Buffer.alloc(0), PNG.subarray(0, r.int(2, PNG.length - 13))])), { name: 'prompt', data: 'What?' }]));
    else if (kind === 2) {
      const bad = r.pick(['', '   ', 'x'.repeat(VISION_PROMPT_MAX_CHARS + 1)]);
      mp(multipart([image(), { name: 'prompt', data: bad }]));
    } else if (kind === 3) mp(multipart([image(), { name: 'prompt', data: 'What?' }, { name: 'quality', data: r.pick(['ultra', '', 'HIGH', '__proto__', randomString(r, 10)]) }]));
    else if (kind === 4) {
      // pollution-shaped field names next to a valid image and prompt: refused as unknown fields
      const name = r.pick(['__proto__', '__proto__[polluted]', `__proto__[${MARKER}]`, `constructor[prototype][${MARKER}]`, `prompt[__proto__][${MARKER}]`, 'prototype', 'constructor', 'prompt[]', 'quality[0]', `zz${headerValue(randomString(r, 12)).replace(/["\\;]/g, '')}`]);
      // (a name a quote or backslash breaks makes a part without a name, which the parser skips: that is not this case)
      mp(multipart([image(), { name: 'prompt', data: 'What?' }, { name, data: 'polluted' }]));
    } else if (kind === 5) {
      // the file in the wrong field, two files, or no file
      const variant = r.int(0, 2);
      if (variant === 0) mp(multipart([image(PNG, r.pick(['img', 'file', '__proto__', 'image[]', 'constructor'])), { name: 'prompt', data: 'What?' }]));
      // (named files: a part with an empty filename is not a file to multer, as with an empty form input)
      else if (variant === 1) mp(multipart([{ ...image(), filename: 'a.png' }, { ...image(), filename: 'b.png' }, { name: 'prompt', data: 'What?' }]));
      else mp(multipart([{ name: 'prompt', data: 'What?' }, { name: 'image', data: PNG.toString('base64') }]));
    } else if (kind === 6) {
      // too many parts
      mp(multipart([image(), ...Array.from({ length: 7 }, (_, j) => ({ name: j === 0 ? 'prompt' : `f${j}`, data: 'x' }))]));
    } else if (kind === 7) {
      // broken framing: truncated, wrong boundary, junk
      const whole = multipart([image(), { name: 'prompt', data: 'What?' }]);
      const variant = r.int(0, 3);
      if (variant === 0) mp(whole.subarray(0, r.int(10, whole.length - 10)));
      else if (variant === 1) mp(whole, 'another-boundary');
      else if (variant === 2) mp(randomBytes(r.int(1, 500)));
      else cases.push({ family: 'vision-upload', req: { method: 'POST', path: '/v1/vision', headers: { ...auth(), 'content-type': 'multipart/form-data' }, body: whole }, allowed: [400, 415] });
    } else if (kind === 8) {
      // an image under a content type the endpoint does not take, or no content type
      const type = r.pick(['image/png', 'application/octet-stream', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/mixed; boundary=x', '']);
      cases.push({ family: 'vision-upload', req: { method: 'POST', path: '/v1/vision', headers: { ...auth(), ...(type && { 'content-type': type }) }, body: PNG }, allowed: [400, 415] });
    } else {
      // a field over the per-field size limit
      mp(multipart([image(), { name: 'prompt', data: 'x'.repeat(33 * 1024) }]));
    }
  }
  // No body at all (chunked and empty, or a zero length), and an image past the size limit.
  cases.push({ family: 'vision-upload', req: { method: 'POST', path: '/v1/vision', headers: auth() }, allowed: [400, 415] });
  cases.push({ family: 'vision-upload', req: { method: 'POST', path: '/v1/vision', headers: { ...auth(), 'content-length': '0' } }, allowed: [400, 415] });
  mp(multipart([{ ...image(Buffer.concat([PNG, Buffer.alloc(9 * 1024 * 1024)])), filename: 'big.png' }, { name: 'prompt', data: 'What?' }]), undefined, [413]);
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Family: query strings on every GET endpoint that reads parameters (strict: unknown ones refused).

interface QuerySpec {
  path: string;
  /** Param -> values it refuses. */
  invalid: Record<string, string[]>;
  /** Param -> values it accepts (mixed in so the bad one is not always alone). */
  valid: Record<string, string[]>;
  /** Admin token (default) or a user key. */
  as?: 'user';
}

const BAD_INSTANT = ['yesterday', '2026-13-45', '2026-11-25T10:00:00', '25/11/2026', '', '0', 'NaN', '2026-11-25T25:61:00Z', '+275760-09-13', '💥', '2026-11-25T10:00:00.000+25:00'];
const BAD_LIMIT = ['0', '-1', '1001', 'abc', '1.5', '', 'NaN', 'Infinity', '1e309', '💥', '10px'];
const BAD_QID = ['', 'a'.repeat(65), 'has space', 'a:b', '💥', '\u0000', '{x}', 'a/b', '\ud800'];

function querySpecs(): QuerySpec[] {
  const entries = {
    invalid: {
      from: BAD_INSTANT,
      to: BAD_INSTANT,
      user_id: BAD_QID,
      project_id: BAD_QID,
      provider: ['p'.repeat(65)],
      model: ['m'.repeat(129)],
      service: ['s'.repeat(65)],
      operation: ['o'.repeat(65)],
      limit: BAD_LIMIT,
      cursor: ['', '$$', 'a b', 'c'.repeat(201), '💥', '../x', 'a:b'],
    },
    valid: { from: ['2026-11-01'], to: ['2026-11-30T00:00:00Z'], provider: ['openai'], model: ['gpt-4o-mini'], limit: ['10'] },
  };
  const { limit: _l, cursor: _c, ...csvInvalid } = entries.invalid;
  const at = { invalid: { at: BAD_INSTANT }, valid: { at: ['2026-11-10'] } };
  return [
    {
      path: '/v1/costs/summary',
      invalid: { period: ['year', '', 'DAY', 'hour', '__proto__'], at: BAD_INSTANT, group_by: ['colour', '', 'USER', '__proto__'], user_id: BAD_QID, project_id: BAD_QID },
      valid: { period: ['day', 'week', 'month'], group_by: ['model', 'provider'], at: ['2026-11-10'] },
    },
    { path: '/v1/costs/summary', invalid: { period: ['year'], user_id: BAD_QID, project_id: BAD_QID }, valid: { period: ['day'] }, as: 'user' },
    { path: '/v1/costs/entries', ...entries },
    { path: '/v1/costs/entries', ...entries, as: 'user' },
    { path: '/v1/costs/entries.csv', invalid: { ...csvInvalid, limit: ['10'], cursor: ['abc'] }, valid: entries.valid },
    { path: '/v1/costs/reports/day', ...at },
    { path: '/v1/costs/reports/month', ...at },
    { path: '/v1/costs/recommendations', ...at },
    { path: '/v1/costs/dead-letters', invalid: { limit: BAD_LIMIT }, valid: { limit: ['5'] } },
    {
      path: '/v1/alerts',
      invalid: { scope: ['team', '', 'USER', '__proto__'], scope_id: ['', 'x'.repeat(129)], state: ['open', '', 'FIRING'], since: ['abc', 'x'.repeat(41), '', 'tomorrow'], limit: BAD_LIMIT },
      valid: { scope: ['user', 'project', 'ops'], scope_id: ['alice'], state: ['firing', 'resolved'], since: ['0', '2026-11-01T00:00:00Z'], limit: ['10'] },
    },
    { path: '/v1/alerts', invalid: { state: ['open'], limit: BAD_LIMIT }, valid: { scope: ['user'] }, as: 'user' },
    { path: '/v1/alerts/webhooks/dead-letters', invalid: { limit: BAD_LIMIT }, valid: { limit: ['5'] } },
    // Valid patterns would open the live stream; every case here carries a refused one.
    { path: '/v1/events/stream', invalid: { types: [',', ' , ', ',,', 'Workflow', 'v1', 'a.b.c', '*.*.*', 'a b', '💥', 'x'.repeat(501), Array.from({ length: 21 }, () => 'a').join(','), 'usage.recorded;drop', '../x'] }, valid: { types: ['*', 'workflow.*', 'usage.recorded'] } },
  ];
}

/** Query-string shapes that have broken parsers: nesting, repeats, pollution, bad escapes. */
function oddParam(r: Rng, known: string[]): string {
  const k = known.length ? r.pick(known) : 'x';
  return r.pick([
    () => `${r.pick(POLLUTION_KEYS)}=1`,
    () => `__proto__[${MARKER}]=1`,
    () => `constructor[prototype][${MARKER}]=1`,
    () => `${k}[__proto__][${MARKER}]=1`,
    () => `${k}[]=1`,
    () => `${k}[a]=1`,
    () => `${enc(randomString(r, 12)).slice(0, HEAD_BUDGET) || 'zz'}=${enc(randomString(r, 20)).slice(0, HEAD_BUDGET)}`,
    () => `zz${r.int(0, 1e6)}`,
    () => '=',
    () => '=x',
    () => `${enc(k)}%`,
    () => `%zz=1`,
    () => `a=%E0%A4%A`,
    () => `%ED%A0%80=1`,
    () => `q=${'x'.repeat(r.int(1_000, 3_000))}`,
  ])();
}

function queryCases(r: Rng): Case[] {
  const cases: Case[] = [];
  for (const spec of querySpecs()) {
    const known = Object.keys(spec.invalid);
    for (let i = 0; i < n(50); i++) {
      const params: string[] = [];
      // At least one refused item: a bad value of a known param, a repeated param, or an unknown one.
      const mode = r.int(0, 2);
      if (mode === 0) {
        const k = r.pick(known);
        params.push(`${k}=${enc(r.pick(spec.invalid[k]!))}`);
      } else if (mode === 1 && Object.keys(spec.valid).length) {
        const k = r.pick(Object.keys(spec.valid));
        params.push(`${k}=${enc(r.pick(spec.valid[k]!))}`, `${k}=${enc(r.pick(spec.valid[k]!))}`);
      } else {
        params.push(oddParam(r, known));
        if (!params[0]!.includes('=') || params[0]!.startsWith('=')) params.push(`${r.pick(POLLUTION_KEYS)}=1`);
      }
      // Then some noise: valid values, odd shapes, separators.
      for (let j = r.int(0, 3); j > 0; j--) {
        const validKeys = Object.keys(spec.valid).filter((k) => !params.some((p) => p.startsWith(`${k}=`)));
        if (r.chance(0.5) && validKeys.length) {
          const k = r.pick(validKeys);
          params.push(`${k}=${enc(r.pick(spec.valid[k]!))}`);
        } else params.push(oddParam(r, known));
      }
      const sep = r.pick(['&', '&', '&&']);
      const auth = spec.as === 'user' ? `Bearer ${creds.user}` : `Bearer ${sys.adminToken}`;
      cases.push({
        family: 'query',
        req: { method: 'GET', path: `${spec.path}?${params.join(sep)}`, headers: { authorization: auth } },
        allowed: spec.as === 'user' ? [400, 403] : [400],
      });
    }
  }
  // Endpoints without parameters ignore a query string; junk there must still be harmless.
  for (const path of ['/v1/budgets', '/v1/admin/keys', '/v1/alerts/webhooks', '/v1/alerts/alert-1', '/v1/budgets/user/victim', '/v1/alerts/silences', '/v1/ops/status', '/healthz', '/readyz', '/metrics', '/dashboard']) {
    for (let i = 0; i < n(6); i++) {
      const q = Array.from({ length: r.int(1, 4) }, () => oddParam(r, ['limit', 'scope'])).join('&');
      cases.push({ family: 'ignored-query', req: { method: 'GET', path: `${path}?${q}`, headers: { authorization: `Bearer ${sys.adminToken}` } }, allowed: [200, 404], reads: true });
    }
  }
  // SSE resume ids that are not stream ids: refused before the stream opens.
  for (let i = 0; i < n(20); i++) {
    const bad = r.pick(['', 'abc', '1-', '-1', '1-2-3', '$', '>', '+', '0', `${'9'.repeat(21)}-0`, '1714000000000-0 ', 'x'.repeat(500)]);
    // Node trims header values, so only ids that stay invalid trimmed go in the header.
    const viaHeader = r.chance(0.5) && bad.trim() !== '' && !/^\d{1,20}-\d{1,20}$/.test(bad.trim());
    cases.push({
      family: 'sse-resume',
      req: {
        method: 'GET',
        path: viaHeader ? '/v1/alerts/stream' : `/v1/alerts/stream?last_event_id=${enc(bad)}`,
        headers: { authorization: `Bearer ${creds.user}`, ...(viaHeader && { 'last-event-id': headerValue(bad) }) },
      },
      allowed: [400],
    });
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Family: path parameters, and paths and methods that match no route.

const WRONG_METHODS: Array<[string, string]> = [
  ['GET', '/v1/chat'], ['PATCH', '/v1/chat'], ['PUT', '/v1/chat'], ['GET', '/v1/chat/completions'], ['DELETE', '/v1/chat/completions'],
  ['GET', '/v1/vision'], ['PUT', '/v1/vision'], ['POST', '/v1/costs/summary'], ['DELETE', '/v1/costs/entries'], ['PUT', '/v1/admin/keys'],
  ['PATCH', '/v1/admin/keys'], ['POST', '/v1/budgets'], ['DELETE', '/v1/budgets'], ['POST', '/v1/alerts'], ['POST', '/v1/alerts/webhooks'],
  ['POST', '/healthz'], ['DELETE', '/metrics'], ['PATCH', '/v1/budgets/user/victim'], ['POST', '/v1/budgets/user/victim'], ['POST', '/v1/alerts/stream'],
  ['PUT', '/v1/alerts/silences'], ['POST', '/v1/ops/status'], ['POST', '/v1/events/stream'], ['POST', '/dashboard'], ['DELETE', '/dashboard'],
  ['POST', '/dashboard/vendor/uPlot.min.css'], ['PUT', '/dashboard/index.html'],
];

function pathCases(r: Rng): Case[] {
  const cases: Case[] = [];
  const adminH = { authorization: `Bearer ${sys.adminToken}` };
  const userH = { authorization: `Bearer ${creds.user}` };
  const validBudget = json({ periods: [{ period: 'day', limit_micros: 1_000, mode: 'hard' }] });
  const validHook = json({ url: 'http://127.0.0.1:9/hook' });
  const scopeSeg = () => (r.chance(0.5) ? r.pick(['user', 'project', 'global']) : randomSegment(r));
  const add = (req: RawRequest, allowed: readonly number[] = [400, 404]) => cases.push({ family: 'path', req, allowed });
  const notRoute = (seg: string, words: string[]) => (words.includes(seg.toLowerCase()) ? `${seg}x` : seg);

  for (let i = 0; i < n(30); i++) {
    add({ method: 'DELETE', path: `/v1/admin/keys/${randomSegment(r)}`, headers: adminH });
    add({ method: 'GET', path: `/v1/budgets/${scopeSeg()}/${invalidIdSegment(r)}`, headers: adminH });
    add({ method: 'GET', path: `/v1/budgets/${notRoute(randomSegment(r), ['user', 'project', 'global'])}/${randomSegment(r)}`, headers: adminH });
    // A valid budget under an invalid scope or id must not be stored anywhere.
    add({ method: 'PUT', path: `/v1/budgets/${scopeSeg()}/${invalidIdSegment(r)}`, headers: { ...adminH, ...JSON_TYPE }, body: validBudget });
    add({ method: 'PUT', path: `/v1/budgets/${notRoute(randomSegment(r), ['user', 'project', 'global'])}/victim`, headers: { ...adminH, ...JSON_TYPE }, body: validBudget });
    add({ method: 'DELETE', path: `/v1/budgets/${scopeSeg()}/${invalidIdSegment(r)}`, headers: adminH });
    add({ method: 'GET', path: `/v1/alerts/${notRoute(randomSegment(r), ['stream', 'webhooks', 'silences'])}`, headers: userH });
    add({ method: 'DELETE', path: `/v1/alerts/silences/${randomSegment(r)}`, headers: adminH });
    add({ method: 'PUT', path: `/v1/alerts/webhooks/${invalidIdSegment(r)}`, headers: { ...adminH, ...JSON_TYPE }, body: validHook });
    add({ method: 'DELETE', path: `/v1/alerts/webhooks/${notRoute(randomSegment(r), ['victim-hook'])}`, headers: adminH });
    add({ method: 'GET', path: `/v1/costs/reports/${notRoute(randomSegment(r), ['day', 'week', 'month'])}`, headers: adminH });
  }
  // The dashboard's static files: traversal and junk never serve a file from outside it, and never
  // answer outside the one error shape (every method, with and without credentials).
  const TRAVERSAL = ['..%2F..%2Fpackage.json', '%2e%2e/%2e%2e/package.json', '%2e%2e%2f%2e%2e%2fsrc%2fapp.ts', '..%5C..%5Cpackage.json', '....//....//package.json', '%252e%252e%252fpackage.json', '.env', '.git/config', '%00', '%', 'index.html%00.js', '%c0%ae%c0%ae/package.json'];
  for (let i = 0; i < n(40); i++) {
    const base = r.pick(['/dashboard/', '/dashboard/vendor/']);
    const tail = r.chance(0.5) ? r.pick(TRAVERSAL) : `zz${randomSegment(r)}`;
    const method = r.pick(['GET', 'GET', 'POST', 'PUT', 'DELETE', 'PATCH']);
    add({ method, path: `${base}${tail}`, headers: r.chance(0.5) ? adminH : {} }, [400, 403, 404]);
  }
  // No such route: random paths and the wrong methods on real ones (with a valid admin token).
  for (let i = 0; i < n(40); i++) {
    const random = `/${r.pick(['v1', 'v2', 'admin', '', '.env', '.git', 'api'])}/${Array.from({ length: r.int(1, 4) }, () => `zz${randomSegment(r)}`).join('/')}`;
    add({ method: r.pick(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']), path: random, headers: { ...adminH, ...JSON_TYPE }, body: json(randomJson(r)) }, [400, 404]);
  }
  // A request head over Node's 16 KB limit: refused by Node itself with a bare 431, never reaching the app.
  for (const req of [
    { method: 'GET', path: `/v1/costs/summary?q=${'x'.repeat(20_000)}`, headers: adminH },
    { method: 'POST', path: '/v1/chat', headers: { authorization: `Bearer ${'A'.repeat(20_000)}`, ...JSON_TYPE }, body: json({ message: 'hi' }) },
  ]) cases.push({ family: 'oversize-head', req, allowed: [431], bare: true });
  for (const [method, path] of WRONG_METHODS) add({ method, path, headers: { ...adminH, ...JSON_TYPE }, body: json({ message: 'hi' }) }, [404]);
  return cases;
}

// ---------------------------------------------------------------------------------------------
// The keyspace: everything under the test prefix, compared before and after.

/** Every key with a digest of its value; the rate limiter's counters are the one expected write. */
async function keyspaceDigest(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const r = sys.redis;
  for (const k of await keysMatching(r, namespaceGlobs(sys.namespace))) {
      if (k.includes(`:rl:`) || k.endsWith(':stalled-check')) continue;
      const type = await r.type(k);
      let v: unknown;
      if (type === 'string') v = await r.get(k);
      else if (type === 'hash') v = Object.entries(await r.hgetall(k)).sort();
      else if (type === 'set') v = (await r.smembers(k)).sort();
      else if (type === 'zset') v = await r.call('ZRANGE', k, '0', '-1', 'WITHSCORES');
      else if (type === 'list') v = await r.lrange(k, 0, -1);
      else if (type === 'stream') v = [await r.xlen(k), ((await r.xrevrange(k, '+', '-', 'COUNT', 1)) as unknown as Array<[string]>)[0]?.[0] ?? null];
      else if (type === 'none') continue;
      out.set(k, `${type}:${JSON.stringify(v)}`);
    }
  return out;
}

function diff(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(k) !== b.get(k)) out.push(`${k}: ${String(a.get(k)).slice(0, 150)} -> ${String(b.get(k)).slice(0, 150)}`);
  }
  return out;
}

/** Waits until background work (ledger, alerting) stops changing the keyspace. */
async function settledDigest(): Promise<Map<string, string>> {
  let last = await keyspaceDigest();
  for (let i = 0; i < 50; i++) {
    await new Promise((res) => setTimeout(res, 200));
    const now = await keyspaceDigest();
    if (diff(last, now).length === 0) return now;
    last = now;
  }
  return last;
}

// ---------------------------------------------------------------------------------------------

const timings: Array<[number, string]> = [];
async function runAll(cases: Case[], concurrency = 8): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= cases.length) return;
      const c = cases[i]!;
      let res: RawResponse;
      const t0 = Date.now();
      try {
        res = await client.send(c.req);
        if (process.env.FUZZ_TIMING) timings.push([Date.now() - t0, describe(c, i).slice(0, 160)]);
      } catch (err) {
        failures.push(`${describe(c, i)} -> request failed: ${(err as Error).message}`);
        continue;
      }
      const problems = c.bare
        ? c.allowed.includes(res.status) ? [] : [`status ${res.status}`]
        : c.reads && res.status < 400 ? (c.allowed.includes(res.status) ? [] : [`status ${res.status}`]) : errorShapeProblems(res, c.allowed);
      if (problems.length) failures.push(`${describe(c, i)} -> ${problems.join('; ')} | ${res.text.slice(0, 300)}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return failures;
}

function describe(c: Case, i: number): string {
  const max = process.env.FUZZ_VERBOSE ? 4_000 : 160;
  const body = c.req.body === undefined ? '' : ` body=${JSON.stringify((Buffer.isBuffer(c.req.body) ? c.req.body.toString('latin1') : c.req.body).slice(0, max))}`;
  const headers = JSON.stringify(c.req.headers ?? {}).slice(0, 200);
  return `[seed ${SEED} ${c.family} #${i}] ${c.req.method} ${c.req.path.slice(0, 200)} ${headers}${body}`;
}

// ---------------------------------------------------------------------------------------------

let before: Map<string, string>;
let protoBefore: Record<string, string[]>;
let jobsBefore: Record<string, number>;
let busLenBefore: number;

beforeAll(async () => {
  const t0 = Date.now();
  const mark = (what: string) => process.env.FUZZ_TIMING && console.log(`${what}: ${Date.now() - t0} ms`);
  sys = await startFullSystem('fuzz');
  mark('started');
  client = httpClient(sys.url);
  admin = { authorization: `Bearer ${sys.adminToken}`, ...JSON_TYPE };
  const mk = async (name: string, scopes: Array<'chat' | 'vision' | 'costs' | 'admin'>) => (await sys.keys.create({ name, user_id: `fuzz-${name}`, project_id: 'fuzz', scopes })).key;
  creds.user = await mk('user', ['chat', 'vision', 'costs']);
  creds.chatOnly = await mk('chat', ['chat']);
  creds.costsOnly = await mk('costs', ['costs']);
  creds.visionOnly = await mk('vision', ['vision']);
  creds.adminKey = await mk('admin', ['admin']);
  const revoked = await sys.keys.create({ name: 'revoked', user_id: 'fuzz-revoked', project_id: 'fuzz' });
  creds.revoked = revoked.key;
  await sys.keys.revoke(revoked.record.key_id);
  const victim = await sys.keys.create({ name: 'victim', user_id: 'victim', project_id: 'fuzz' });
  ids.victimKeyId = victim.record.key_id;
  ids.victimKeyHash = (await sys.redis.get(`${sys.namespace}:apikey-id:${victim.record.key_id}`))!;

  // Resources the fuzz must leave alone, and positive controls: each template is accepted as is.
  const ok = async (method: string, path: string, body: unknown, headers: Record<string, string>, status: number[]) => {
    const res = await client.send({ method, path, headers: { ...JSON_TYPE, ...headers }, body: json(body) });
    if (!status.includes(res.status)) throw new Error(`positive control ${method} ${path}: ${res.status} ${res.text.slice(0, 300)}`);
  };
  await ok('PUT', '/v1/budgets/user/victim', { periods: [{ period: 'month', limit_micros: 1_000_000_000 }] }, admin, [201]);
  await ok('PUT', '/v1/alerts/webhooks/victim-hook', { url: 'http://127.0.0.1:9/hook' }, admin, [201]);
  const silence = await client.send({ method: 'POST', path: '/v1/alerts/silences', headers: admin, body: json({ matchers: { scope: 'user', scope_id: 'victim' }, duration_minutes: 600 }) });
  if (silence.status !== 201) throw new Error(`positive control silence: ${silence.status} ${silence.text}`);
  ids.victimSilence = JSON.parse(silence.text).silence.id;
  for (const spec of bodySpecs()) {
    const h = spec.path.startsWith('/v1/chat') || spec.path === '/v1/vision' ? { authorization: `Bearer ${creds.user}` } : admin;
    await ok(spec.method, spec.path, spec.template, h, [200, 201]);
  }
  const form = await client.send({
    method: 'POST',
    path: '/v1/vision',
    headers: { authorization: `Bearer ${creds.user}`, 'content-type': 'multipart/form-data; boundary=fuzzBoundary7MA4YWxk' },
    body: multipart([{ name: 'image', filename: 'a.png', type: 'image/png', data: PNG }, { name: 'prompt', data: 'What?' }]),
  });
  expect(form.status).toBe(200);

  mark('controls');
  before = await settledDigest();
  mark('settled');
  protoBefore = prototypeSnapshot();
  jobsBefore = await sys.jobCounts();
  busLenBefore = await sys.redis.xlen(sys.busStream);
}, 60_000);

afterAll(async () => {
  client?.close();
  await sys?.close();
});

test(`every endpoint answers bad input with a 4xx in the one error shape, never a 5xx (seed ${SEED})`, async () => {
  const r = prng(SEED);
  const cases = [...credentialCases(r), ...bodyCases(r), ...visionCases(r), ...queryCases(r), ...pathCases(r)];
  const failures = await runAll(cases);
  // Every family ran, with a few hundred cases per endpoint family.
  expect(cases.length).toBeGreaterThan(2_000 * SCALE);
  if (process.env.FUZZ_TIMING) {
    const byFamily = new Map<string, [number, number]>();
    for (const [ms, d] of timings) {
      const fam = /\] (\S+ \S{0,40})/.exec(d)?.[1] ?? '?';
      const f = `${/seed \d+ (\S+)/.exec(d)?.[1]} ${fam.split('?')[0]}`;
      const cur = byFamily.get(f) ?? [0, 0];
      byFamily.set(f, [cur[0] + ms, cur[1] + 1]);
    }
    console.log([...byFamily].sort((a, b) => b[1][0] - a[1][0]).slice(0, 30).map(([f, [ms, c]]) => `${f}: ${ms} ms / ${c}`).join('\n'));
    console.log(timings.sort((a, b) => b[0] - a[0]).slice(0, 15).map(([ms, d]) => `${ms} ms ${d}`).join('\n'));
  }
  expect(failures).toEqual([]);
}, 120_000);

test('OPTIONS and HEAD on every route write nothing and never fail', async () => {
  const failures: string[] = [];
  for (const ep of endpoints()) {
    for (const method of ['OPTIONS', 'HEAD']) {
      const res = await client.send({ method, path: ep.path });
      // Express answers OPTIONS itself with the allowed methods; HEAD runs the GET guards (401).
      const fine = method === 'OPTIONS' ? res.status === 200 || res.status === 404 : res.status === 401 || res.status === 404;
      if (!fine) failures.push(`${method} ${ep.path} -> ${res.status}`);
    }
  }
  expect(failures).toEqual([]);
});

test('nothing was written: no job, no event, no ledger entry, no budget, no key, no webhook', async () => {
  expect(await sys.jobCounts()).toEqual(jobsBefore);
  expect(await sys.redis.xlen(sys.busStream)).toBe(busLenBefore);
  const after = await settledDigest();
  expect(diff(before, after)).toEqual([]);
});

test('no prototype was polluted', () => {
  expect(prototypeSnapshot()).toEqual(protoBefore);
  const probe: Record<string, unknown> = {};
  expect(probe[MARKER]).toBeUndefined();
  expect((probe as { polluted?: unknown }).polluted).toBeUndefined();
  expect(Object.prototype.hasOwnProperty.call(Object.prototype, MARKER)).toBe(false);
});

test('the system still serves a valid request afterwards', async () => {
  const res = await client.send({ method: 'POST', path: '/v1/chat', headers: { authorization: `Bearer ${creds.user}`, ...JSON_TYPE }, body: json({ message: 'still there?' }) });
  expect(res.status).toBe(200);
  expect(JSON.parse(res.text).reply).toEqual(expect.any(String));
});
