import { createDocument, type oas31, type ZodOpenApiPathsObject, type ZodOpenApiResponsesObject } from 'zod-openapi';

type OpenAPIObject = oas31.OpenAPIObject;
import { openapi as admin } from '../routes/admin';
import { openapi as alerts } from '../routes/alerts';
import { openapi as analytics } from '../routes/analytics';
import { openapi as budgets } from '../routes/budgets';
import { openapi as cache } from '../routes/cache';
import { openapi as chat } from '../routes/chat';
import { openapi as costs } from '../routes/costs';
import { openapi as dashboard } from '../routes/dashboard';
import { openapi as docs } from '../routes/docs';
import { openapi as flags } from '../routes/flags';
import { openapi as health } from '../routes/health';
import { openapi as journeys } from '../routes/journeys';
import { openapi as openAi } from '../routes/openai-compat';
import { openapi as ops } from '../routes/ops';
import { openapi as prices } from '../routes/prices';
import { openapi as usage } from '../routes/usage';
import { openapi as vision } from '../routes/vision';
import type { z } from 'zod';
import { type ApiRoute, errorResponse, MICROS_NOTE } from './registry';

/** Every route file's entries; a new route file adds its `openapi` list here. */
export const API_ROUTES: readonly ApiRoute[] = [
  ...health, ...docs, ...dashboard, ...chat, ...openAi, ...vision, ...costs, ...budgets, ...alerts,
  ...cache, ...admin, ...flags, ...ops, ...analytics, ...journeys, ...usage, ...prices,
];

const TAGS = [
  { name: 'Chat', description: 'Chat answered by the workflow: fallbacks, retries, grounding, cache. Paid: admission holds the worst-case cost on every hard budget.' },
  { name: 'OpenAI-compatible', description: 'The Chat Completions API the stock `openai` SDK speaks (`baseURL` = `<gateway>/v1`).' },
  { name: 'Vision', description: 'Image analysis, cheapest capable provider first, with a one-hour result cache.' },
  { name: 'Costs', description: 'The ledger: every billed call priced in integer micro-dollars. A key reads its own user or project; an admin anyone\'s.' },
  { name: 'Budgets', description: 'Per user, project and global budgets per day, week and month; hard ones refuse paid work at 100%.' },
  { name: 'Alerts', description: 'Budget and ops alerts, the live feed (SSE), webhook targets and silences.' },
  { name: 'Cache', description: 'Hit ratio, money saved, per-project settings and purge.' },
  { name: 'Keys', description: 'API keys (only their hashes are stored).' },
  { name: 'Flags', description: 'Feature flags with Unleash semantics.' },
  { name: 'Analytics', description: 'Per-minute rollups: latency and TTFT quantiles, outcomes, cost; funnels.' },
  { name: 'Journeys', description: 'Multi-step user journeys: templates (admins publish), each user\'s journeys with progress and cost per step, and per-template conversion.' },
  { name: 'Usage', description: 'Metered external APIs the application calls itself: hold the worst case on the hard budgets first, then report what the call used (priced and settled by the ledger once), or release the hold.' },
  { name: 'Prices', description: 'The versioned price table the ledger charges by, in integer micro-dollars; admins add versions that take effect at their date.' },
  { name: 'Operations', description: 'Breakers, error rates, queues, the live event stream, health and metrics.' },
  { name: 'Reference', description: 'This document and its rendering; the operator dashboard.' },
];

const SECURITY_SCHEMES = {
  apiKey: { type: 'http', scheme: 'bearer', bearerFormat: 'tg_...', description: 'An API key as `Authorization: Bearer tg_...` (what the OpenAI SDK sends). Each key has scopes: `chat`, `vision`, `costs`, `usage` (holding and reporting external metered calls), `admin` (admin is every scope).' },
  apiKeyHeader: { type: 'apiKey', in: 'header', name: 'x-api-key', description: 'The same API key in `x-api-key` instead of `Authorization`.' },
  adminToken: { type: 'http', scheme: 'bearer', description: 'The operator\'s `ADMIN_TOKEN` as `Authorization: Bearer <token>`: every scope, not rate limited.' },
} as const;

/** The scope a route needs, `undefined` for an open one. */
export function scopeOf(r: ApiRoute): string | undefined {
  return r.guard === 'none' ? undefined : (r.scope ?? r.guard);
}

function errorStatuses(r: ApiRoute): number[] {
  const s = new Set<number>(r.errors ?? []);
  if (r.query || r.params || r.headers || r.body) s.add(400);
  if (r.guard !== 'none') [401, 403].forEach((x) => s.add(x));
  // Admission (not the admin guard) counts every request against the key's rate limit.
  if (r.guard !== 'none' && r.guard !== 'admin') s.add(429);
  if (r.paid) [402, 422, 502, 503, 504].forEach((x) => s.add(x));
  if (r.held) s.add(402);
  s.add(500);
  return [...s].sort((a, b) => a - b);
}

export const openApiPath = (expressPath: string) => expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

function operation(r: ApiRoute) {
  const scope = scopeOf(r);
  const responses: ZodOpenApiResponsesObject = {};
  for (const [status, reply] of Object.entries(r.responses)) {
    responses[status as `${1 | 2 | 3 | 4 | 5}${string}`] = {
      description: reply.description,
      ...(reply.headers && { headers: reply.headers }),
      ...(reply.content && { content: Object.fromEntries(Object.entries(reply.content).map(([type, schema]) => [type, { schema }])) }),
    };
  }
  for (const status of errorStatuses(r)) responses[String(status) as `4${string}`] ??= errorResponse(status);
  const needs = scope
    ? `\n\nNeeds an API key with the \`${scope}\` scope${scope === 'admin' ? '' : ' (or `admin`)'}, or the ADMIN_TOKEN.`
    : '';
  return {
    operationId: operationId(r),
    tags: [r.tag],
    summary: r.summary,
    description: `${r.description ?? r.summary}${needs}`,
    security: (scope ? [{ apiKey: [scope] }, { apiKeyHeader: [scope] }, { adminToken: [] }] : []) as Array<Record<string, string[]>>,
    ...(scope && { 'x-tollgate-scope': scope }),
    ...((r.query || r.params || r.headers) && {
      requestParams: { ...(r.query && { query: r.query }), ...(r.params && { path: r.params }), ...(r.headers && { header: r.headers }) },
    }),
    ...(r.body && {
      requestBody: {
        required: r.body.required ?? true,
        ...(r.body.description && { description: r.body.description }),
        content: Object.fromEntries(Object.entries(r.body.content).map(([type, schema]) => [type, { schema }])),
      },
    }),
    responses,
  };
}

/** `get /v1/budgets/:scope/:scopeId` -> `getV1BudgetsByScopeByScopeId`: stable, readable client method names. */
function operationId(r: ApiRoute): string {
  const words = r.path
    .split('/')
    .filter(Boolean)
    .map((seg) => (seg.startsWith(':') ? `by-${seg.slice(1)}` : seg))
    .flatMap((w) => w.split(/[^A-Za-z0-9]+/))
    .filter(Boolean);
  return r.method + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

/** Builds the document from route entries (the gateway's own, unless a test passes others). */
export function buildOpenApiDocument(routes: readonly ApiRoute[] = API_ROUTES, version = '0.1.0'): OpenAPIObject {
  const paths: ZodOpenApiPathsObject = {};
  const schemas: Record<string, z.ZodType> = {};
  const seen = new Set<string>();
  for (const r of routes) {
    const key = `${r.method} ${r.path}`;
    if (seen.has(key)) throw new Error(`OpenAPI: ${key} is declared twice`);
    seen.add(key);
    Object.assign(schemas, r.components);
    const p = (paths[openApiPath(r.path)] ??= {});
    p[r.method] = operation(r);
  }
  const doc = createDocument({
    openapi: '3.1.0',
    info: {
      title: 'Tollgate gateway API',
      version,
      description:
        'AI chat and vision for API clients, every provider call priced into an exact ledger, budgets that alert and (when hard) refuse. ' +
        `Money is ${MICROS_NOTE.toLowerCase()} Every error has one shape (\`Error\`) with a machine-readable \`code\`; each status lists its codes.`,
    },
    tags: TAGS,
    components: { securitySchemes: SECURITY_SCHEMES, schemas },
    paths,
  });
  markMoney(doc);
  return pruneComponents(doc, Object.keys(schemas));
}

/**
 * Schemas listed only for an event stream are rendered in both zod-openapi contexts, leaving
 * unused request-side twins of response schemas (`Money` beside `MoneyOutput`): drop what nothing
 * reaches from a path, then give a response schema its plain name back when that name is free.
 */
function pruneComponents(doc: OpenAPIObject, listed: string[]): OpenAPIObject {
  const schemas = (doc.components?.schemas ?? {}) as Record<string, unknown>;
  const refsIn = (node: unknown, out: string[] = []): string[] => {
    if (Array.isArray(node)) node.forEach((n) => refsIn(n, out));
    else if (typeof node === 'object' && node !== null) {
      for (const [k, v] of Object.entries(node)) {
        if (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')) out.push(v.slice(21));
        else refsIn(v, out);
      }
    }
    return out;
  };
  const keep = new Set<string>();
  const todo = [...refsIn(doc.paths), ...listed];
  while (todo.length) {
    const name = todo.pop()!;
    if (keep.has(name)) continue;
    keep.add(name);
    todo.push(...refsIn(schemas[name]).filter((n) => !keep.has(n)));
  }
  const rename = new Map<string, string>();
  for (const name of Object.keys(schemas)) {
    if (!keep.has(name)) continue;
    const plain = name.replace(/Output$/, '');
    if (plain !== name && !keep.has(plain)) rename.set(name, plain);
  }
  const kept = Object.fromEntries(Object.entries(schemas).filter(([n]) => keep.has(n)).map(([n, v]) => [rename.get(n) ?? n, v]));
  const json = JSON.stringify({ ...doc, components: { ...doc.components, schemas: kept } }, (k, v) =>
    k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/') ? `#/components/schemas/${rename.get(v.slice(21)) ?? v.slice(21)}` : v,
  );
  return JSON.parse(json) as OpenAPIObject;
}

/**
 * Every `micros` / `*_micros` property must be an integer and says it is micro-dollars: money
 * is never a float, and a schema that forgets it fails the build (and so the tests).
 */
function markMoney(node: unknown, where = '#'): void {
  if (Array.isArray(node)) return node.forEach((n, i) => markMoney(n, `${where}/${i}`));
  if (typeof node !== 'object' || node === null) return;
  const o = node as Record<string, unknown>;
  if (o.properties && typeof o.properties === 'object') {
    for (const [name, raw] of Object.entries(o.properties as Record<string, Record<string, unknown>>)) {
      if (!/(^|_)micros$/.test(name) || '$ref' in raw) continue;
      const types = ([] as unknown[]).concat(raw.type ?? raw.anyOf ?? []);
      const integer = types.some((t) => t === 'integer' || (typeof t === 'object' && t !== null && (t as { type?: unknown }).type === 'integer'));
      if (!integer) throw new Error(`OpenAPI: money field ${where}/properties/${name} is not an integer schema`);
      raw['x-unit'] = 'USD micros';
      if (typeof raw.description !== 'string' || !raw.description.includes('micro')) raw.description = raw.description ? `${raw.description} ${MICROS_NOTE}` : MICROS_NOTE;
    }
  }
  for (const [k, v] of Object.entries(o)) markMoney(v, `${where}/${k}`);
}

let built: OpenAPIObject | undefined;
/** The gateway's document, built once on first use: nothing of it runs per request. */
export function openApiDocument(): OpenAPIObject {
  return (built ??= buildOpenApiDocument());
}

/** docs/openapi.json as `pnpm openapi` writes it (and test/openapi.test.ts expects it). */
export function renderOpenApi(): string {
  return `${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`;
}
