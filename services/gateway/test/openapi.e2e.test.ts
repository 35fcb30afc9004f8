import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Express } from 'express';
import OpenAI from 'openai';
import ts from 'typescript';
import { classify, KEY_SCOPES } from '@tollgate/shared';
import { CLIENT_DIR, generateTypes, runEsm as esm, TYPES_FILE } from '../scripts/openapi-types';
import { ApiError } from '../src/errors';
import { API_ROUTES, buildOpenApiDocument, openApiPath, renderOpenApi, scopeOf } from '../src/openapi/document';
import { ERROR_CODES } from '../src/openapi/registry';
import { completionChunk, completionReply } from '../src/routes/openai-compat';
import { type FullSystem, startFullSystem } from './full-harness';

/**
 * The OpenAPI document against the running gateway: every route the express app serves is in it
 * and nothing else, it validates as OpenAPI 3.1, the committed copy is current, and a client
 * typed from it (openapi-typescript) compiles and works for chat, costs and budgets.
 */

const ROOT = join(__dirname, '..', '..', '..');

let sys: FullSystem;
const doc = buildOpenApiDocument();
type Doc = { paths: Record<string, Record<string, { security?: Array<Record<string, string[]>>; responses: Record<string, unknown>; 'x-tollgate-scope'?: string }>> };

beforeAll(async () => {
  sys = await startFullSystem('openapi');
}, 60_000);
afterAll(async () => {
  await sys?.close();
});

/**
 * Runs an ES module in node beside the test with `input` read from stdin: the validator and
 * openapi-typescript are ESM (or load ESM), which Jest's CommonJS runtime cannot require.
 */
type Layer = { route?: { path: string | string[]; methods: Record<string, boolean> }; handle?: { stack?: Layer[] } };

/** Every `METHOD path` the app's router (and the routers mounted in it) serves. */
function appRoutes(app: Express): string[] {
  const out: string[] = [];
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) {
        for (const path of ([] as string[]).concat(layer.route.path)) {
          for (const [m, on] of Object.entries(layer.route.methods)) if (on && m !== '_all') out.push(`${m.toUpperCase()} ${path}`);
        }
      } else if (layer.handle?.stack) walk(layer.handle.stack);
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack);
  return out.sort();
}

function documented(d: Doc): string[] {
  return Object.entries(d.paths)
    .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
    .sort();
}

describe('the document and the app', () => {
  test('documents exactly the routes the express app serves', () => {
    const served = appRoutes(sys.app).map((r) => r.replace(/:([A-Za-z0-9_]+)/g, '{$1}'));
    expect(served.length).toBeGreaterThan(40);
    const docd = documented(doc as unknown as Doc);
    expect(served.filter((r) => !docd.includes(r))).toEqual([]); // served but undocumented
    expect(docd.filter((r) => !served.includes(r))).toEqual([]); // documented but absent
    expect(new Set(served).size).toBe(served.length);
  });

  test('every protected operation names its scope and security; open ones say so', () => {
    const d = doc as unknown as Doc;
    for (const r of API_ROUTES) {
      const op = d.paths[openApiPath(r.path)]![r.method]!;
      const scope = scopeOf(r);
      if (!scope) {
        expect(op.security).toEqual([]);
        continue;
      }
      expect(KEY_SCOPES).toContain(scope);
      expect(op['x-tollgate-scope']).toBe(scope);
      expect(op.security).toEqual([{ apiKey: [scope] }, { apiKeyHeader: [scope] }, { adminToken: [] }]);
      expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(['401', '403', '500']));
    }
    expect(d.paths['/v1/costs/reports/{period}']!.get!['x-tollgate-scope']).toBe('admin');
    expect(Object.keys(d.paths['/v1/chat']!.post!.responses)).toEqual(expect.arrayContaining(['200', '400', '402', '429', '502', '503', '504']));
  });

  test('the scope each operation documents is the one the gateway enforces', async () => {
    // Keys without admin: each refused exactly where the document names a scope it lacks.
    const probes: Array<[string, string]> = [
      ['GET', '/v1/budgets'], ['GET', '/v1/costs/recommendations'], ['GET', '/v1/costs/summary'], ['GET', '/v1/alerts'], ['GET', '/v1/ops/status'],
      ['GET', '/v1/journeys/templates'], ['GET', '/v1/journeys'], ['GET', '/v1/analytics/journeys/:template'], ['GET', '/v1/prices'], ['GET', '/v1/usage/operations'],
    ];
    const keySets: Array<Array<'chat' | 'vision' | 'costs' | 'usage'>> = [['chat', 'vision', 'costs'], ['usage']];
    for (const scopes of keySets) {
      const { key } = await sys.keys.create({ name: `no-admin-${scopes.join('-')}`, user_id: 'oa-user', project_id: 'oa-proj', scopes });
      for (const [method, path] of probes) {
        const res = await fetch(`${sys.url}${path.replace(':template', 'oa-none')}`, { method, headers: { authorization: `Bearer ${key}` } });
        const scope = (doc as unknown as Doc).paths[openApiPath(path)]![method.toLowerCase()]!['x-tollgate-scope']!;
        expect([scopes, path, res.status === 403]).toEqual([scopes, path, !(scopes as string[]).includes(scope)]);
      }
    }
  });

  test('each status lists the codes the classifier gives it', () => {
    const gatewayCodes = ['invalid_request', 'validation_failed', 'unauthorized', 'budget_exceeded', 'forbidden', 'not_found', 'conflict', 'payload_too_large', 'unsupported_media_type', 'content_blocked', 'rate_limited', 'circuit_open', 'provider_unavailable', 'provider_malformed_response', 'deadline_exceeded'];
    for (const code of gatewayCodes) {
      const status = classify(new ApiError(code, 'x')).httpStatus;
      expect([code, ERROR_CODES[status]?.codes.includes(code)]).toEqual([code, true]);
    }
  });

  test('money fields are integer micro-dollars', () => {
    const found: string[] = [];
    const walk = (n: unknown, at: string): void => {
      if (Array.isArray(n)) return n.forEach((x, i) => walk(x, `${at}/${i}`));
      if (typeof n !== 'object' || n === null) return;
      const props = (n as { properties?: Record<string, Record<string, unknown>> }).properties;
      for (const [name, p] of Object.entries(props ?? {})) {
        if (!/(^|_)micros$/.test(name) || '$ref' in p) continue;
        found.push(`${at}/${name}`);
        expect([name, p['x-unit']]).toEqual([name, 'USD micros']);
        expect(JSON.stringify(p)).toContain('"integer"');
      }
      for (const [k, v] of Object.entries(n)) walk(v, `${at}/${k}`);
    };
    walk(doc, '#');
    expect(found.length).toBeGreaterThan(15);
    expect(found).toEqual(expect.arrayContaining([expect.stringContaining('/Money/micros'), expect.stringContaining('limit_micros')]));
  });

  test('SSE endpoints are text/event-stream', () => {
    const d = doc as unknown as { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>> };
    for (const [path, method] of [['/v1/alerts/stream', 'get'], ['/v1/events/stream', 'get'], ['/v1/chat/completions', 'post']] as const) {
      expect(Object.keys(d.paths[path]![method]!.responses['200']!.content!)).toContain('text/event-stream');
    }
  });

  test('GET /openapi.json serves the document', async () => {
    const res = await fetch(`${sys.url}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual(JSON.parse(JSON.stringify(doc)));
  });
});

describe('validity and freshness', () => {
  function validate(document: unknown): { valid: boolean; version?: string; errors?: unknown } {
    const script = `import { Validator } from '@seriousme/openapi-schema-validator';
      const v = new Validator(); const r = await v.validate(JSON.parse(input));
      process.stdout.write(JSON.stringify({ valid: r.valid, version: v.version, errors: r.errors }));`;
    return JSON.parse(esm(script, JSON.stringify(document))) as { valid: boolean; version?: string; errors?: unknown };
  }

  test('validates as OpenAPI 3.1 (and the validator does reject a broken one)', () => {
    expect(validate(doc)).toEqual({ valid: true, version: '3.1' });
    const broken = JSON.parse(JSON.stringify(doc)) as Doc;
    (broken.paths['/v1/chat']!.post as Record<string, unknown>).parameters = [{ name: 'no-location', schema: { type: 'string' } }];
    expect(validate(broken).valid).toBe(false);
  });

  test('docs/openapi.json is what `pnpm openapi` generates', () => {
    const committed = readFileSync(join(ROOT, 'docs', 'openapi.json'), 'utf8');
    // On failure: run `pnpm openapi` and commit docs/openapi.json.
    expect(committed === renderOpenApi()).toBe(true);
  });
});

describe('a client typed from the document', () => {
  let client: typeof import('./openapi-client/client');

  test('the committed types are what openapi-typescript makes of the document', () => {
    // On failure: run `pnpm openapi` and commit the types with docs/openapi.json.
    expect(readFileSync(TYPES_FILE, 'utf8') === generateTypes(renderOpenApi())).toBe(true);
  }, 30_000);

  function typeCheck(files: string[]): string[] {
    const program = ts.createProgram(files, {
      strict: true,
      noUncheckedIndexedAccess: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      lib: ['lib.es2022.d.ts'],
      types: ['node'],
      esModuleInterop: true,
      skipLibCheck: true,
      noEmit: true,
    });
    return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  }

  test('type-checks against the generated types, and a wrong use does not', () => {
    expect(typeCheck([join(CLIENT_DIR, 'client.ts')])).toEqual([]);
    const wrong = join(CLIENT_DIR, 'wrong.ts');
    writeFileSync(wrong, "import type { CostSummary } from './client';\nexport const usd = (s: CostSummary): string => s.total.micros;\nexport const nope = (s: CostSummary) => s.totals;\n");
    try {
      const errors = typeCheck([wrong]);
      expect(errors).toEqual([expect.stringContaining("'number' is not assignable to type 'string'"), expect.stringContaining("'totals' does not exist")]);
    } finally {
      execFileSync('rm', ['-f', wrong]);
    }
    const source = readFileSync(join(CLIENT_DIR, 'client.ts'), 'utf8');
    const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
    const mod = { exports: {} as typeof client };
    new Function('module', 'exports', 'require', js)(mod, mod.exports, require);
    client = mod.exports;
  }, 60_000);

  test('chat, costs and budgets against the gateway', async () => {
    const { key } = await sys.keys.create({ name: 'typed', user_id: 'typed-user', project_id: 'typed-proj', scopes: ['chat', 'costs'] });
    const api = client.tollgate(sys.url, key);
    const admin = client.tollgate(sys.url, sys.adminToken);

    const put = await admin.putBudget({ scope: 'user', scopeId: 'typed-user' }, { periods: [{ period: 'day', limit_micros: 5_000_000, mode: 'hard' }] });
    expect(put.status).toBe(201);
    if (client.isError(put)) throw new Error(put.body.error.message);
    expect(client.dayStatus(put.body)).toMatchObject({ limit_micros: 5_000_000, mode: 'hard', spent_micros: 0 });

    const chat = await api.chat({ message: 'What does a typed client cost?' });
    expect(chat.status).toBe(200);
    if (client.isError(chat)) throw new Error(chat.body.error.message);
    const receipt = client.receipt(chat.body);
    expect(receipt.text.length).toBeGreaterThan(0);
    expect(Number.isInteger(receipt.micros) && receipt.micros > 0).toBe(true);

    // The ledger prices the call; the summary, the entries and the budget all see the same micros.
    let spent = 0;
    for (let i = 0; i < 100 && spent === 0; i++) {
      const s = await api.summary({ period: 'day' });
      if (client.isError(s)) throw new Error(s.body.error.message);
      spent = client.spent(s.body);
      if (spent === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(spent).toBe(receipt.micros);
    const entries = await api.entries({ limit: 10 });
    if (client.isError(entries)) throw new Error(entries.body.error.message);
    expect(entries.body.entries.map((e) => e.amount_micros)).toEqual([receipt.micros]);
    const got = await admin.getBudget({ scope: 'user', scopeId: 'typed-user' });
    if (client.isError(got)) throw new Error(got.body.error.message);
    expect(client.dayStatus(got.body)?.spent_micros).toBe(receipt.micros);

    // Errors come back in the documented shape.
    const bad = await api.summary({ period: 'year' as 'day' });
    expect(bad.status).toBe(400);
    expect(client.isError(bad) && bad.body.error.code).toBe('validation_failed');
  }, 30_000);
});

describe('OpenAI compatibility of the documented schemas', () => {
  test('what the stock SDK sends is accepted, and what comes back fits the documented response, plain and streamed', async () => {
    const { key } = await sys.keys.create({ name: 'sdk', user_id: 'sdk-user', project_id: 'sdk-proj', scopes: ['chat'] });
    const sdk = new OpenAI({ apiKey: key, baseURL: `${sys.url}/v1`, maxRetries: 0 });
    const params = { model: 'gpt-4o-mini', messages: [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hello there' }], temperature: 0.2, max_tokens: 50 };
    const { data, response } = await sdk.chat.completions.create(params).withResponse();
    expect(response.status).toBe(200);
    expect(completionReply.safeParse(data).success).toBe(true);

    const chunks: unknown[] = [];
    for await (const chunk of await sdk.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } })) chunks.push(chunk);
    expect(chunks.length).toBeGreaterThan(2);
    for (const c of chunks) expect(completionChunk.safeParse(c).error).toBeUndefined();

    // And OpenAI's own answer (the stub speaks its wire format) fits the schema too.
    const direct = new OpenAI({ apiKey: sys.providerKeys.openai, baseURL: `${sys.stub.url}/v1`, maxRetries: 0 });
    expect(completionReply.safeParse(await direct.chat.completions.create(params)).error).toBeUndefined();
  }, 30_000);
});
