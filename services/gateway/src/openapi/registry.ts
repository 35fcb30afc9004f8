import type { KeyScope } from '@tollgate/shared';
import { z } from 'zod';
import type { ZodOpenApiOperationObject, ZodOpenApiResponseObject } from 'zod-openapi';

/**
 * One route's entry in the OpenAPI document, declared in its route file beside the route it
 * describes and built from the very schemas the route parses with. The document builder
 * (document.ts) adds what every route shares: security, the error responses its guard and
 * inputs imply, and `{param}` paths.
 */
export interface ApiRoute {
  method: 'get' | 'post' | 'put' | 'delete';
  /** Express syntax (`/v1/budgets/:scope/:scopeId`), exactly as the router registers it. */
  path: string;
  tag: string;
  summary: string;
  description?: string;
  /**
   * The guard in front of the route: `none`, the admission of a scope (`chat`, `vision`,
   * `costs`, `usage`: rate limited, and for paid work budget-held) or `admin` (key with the admin
   * scope or the ADMIN_TOKEN, not rate limited).
   */
  guard: 'none' | 'chat' | 'vision' | 'costs' | 'usage' | 'admin';
  /** The scope the route needs when it is stricter than its guard's (a costs route for admins only). */
  scope?: KeyScope;
  /** Paid provider work: admission may refuse on a hard budget, and provider failures reach the client. */
  paid?: boolean;
  /** Admission holds a worst case on the hard budgets (402 when one cannot), but no provider is called here. */
  held?: boolean;
  query?: z.ZodObject;
  params?: z.ZodObject;
  headers?: z.ZodObject;
  body?: { description?: string; required?: boolean; content: Record<string, z.ZodType> };
  responses: Record<number, Reply>;
  /** Schemas to list under components that no body references (an SSE stream's event data). */
  components?: Record<string, z.ZodType>;
  /** Error statuses the route itself raises, beyond what the guard and validated inputs imply. */
  errors?: number[];
}

export interface Reply {
  description: string;
  /** Media type to schema; none for a bodiless reply (204). */
  content?: Record<string, z.ZodType>;
  /** Response headers, one property each (described with `.meta`). */
  headers?: z.ZodObject;
}

export const route = (r: ApiRoute): ApiRoute => r;

/** Money on the wire: integer micro-dollars, never floats. */
export const MICROS_NOTE = 'Integer micro-dollars (1 USD = 1,000,000).';
export const microsSchema = z.number().int().nonnegative().meta({ description: MICROS_NOTE });
/** `{micros, usd}`: the amount and its decimal rendering for display (`usd` is derived, `micros` is the record). */
export const moneySchema = z
  .object({ micros: microsSchema, usd: z.string().meta({ description: 'The same amount in dollars, as a decimal string for display.', examples: ['0.001234'] }) })
  .meta({ id: 'Money' });

/** A stream of server-sent events, described by what each event's `data` holds. */
export function eventStream(description: string): Record<string, z.ZodType> {
  return { 'text/event-stream': z.string().meta({ description }) };
}

/** The error codes each status carries, as the shared classifier maps them (checked in test/openapi.test.ts). */
export const ERROR_CODES: Record<number, { description: string; codes: string[] }> = {
  400: { description: 'The input is invalid: a malformed body, a field that fails validation (`issues` names each), a model that cannot serve the operation, an external operation the price table does not list, or input the provider rejected.', codes: ['invalid_request', 'validation_failed', 'unknown_operation', 'provider_rejected_request'] },
  401: { description: 'No API key, or a key that is not valid or has been revoked.', codes: ['unauthorized'] },
  402: { description: 'A hard budget covering the caller (user, project or global, per period) cannot hold this request\'s worst-case cost; `budget` says which.', codes: ['budget_exceeded'] },
  403: { description: 'The key lacks the scope the route needs, or asks for another tenant\'s data.', codes: ['forbidden'] },
  404: { description: 'No such resource (or not one this key may see).', codes: ['not_found'] },
  409: { description: 'The resource was changed concurrently.', codes: ['conflict'] },
  413: { description: 'The body or image is larger than the limit.', codes: ['payload_too_large'] },
  415: { description: 'The content type (or the image\'s sniffed type) is not accepted.', codes: ['unsupported_media_type'] },
  422: { description: 'The request or its answer was blocked by a content safety filter.', codes: ['content_blocked'] },
  429: { description: 'The key\'s rate limit is reached; `Retry-After` says when to come back.', codes: ['rate_limited'] },
  500: { description: 'An unexpected error; nothing internal is revealed.', codes: ['internal_error'] },
  502: { description: 'Every provider of the fallback chain failed.', codes: ['provider_unavailable', 'provider_malformed_response', 'provider_auth_failed', 'provider_quota_exhausted', 'provider_not_found', 'provider_conflict', 'network_error'] },
  503: { description: 'The providers are paused (circuit open) or rate limiting us.', codes: ['circuit_open', 'provider_rate_limited'] },
  504: { description: 'The request deadline passed before an answer.', codes: ['deadline_exceeded', 'timeout', 'provider_timeout'] },
};

const issueSchema = z.object({ path: z.string().meta({ description: 'Dotted path of the field, or "(body)".' }), message: z.string() });

/** The one error shape every endpoint answers with (errors.ts sends it). */
export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Machine-readable; the codes each status carries are listed on the status.' }),
      category: z.enum(['rate_limit', 'timeout', 'network', 'provider_unavailable', 'authentication', 'invalid_request', 'content_blocked', 'budget_exceeded']),
      message: z.string().meta({ description: 'For people; never internals or secrets.' }),
      suggested_actions: z.array(z.string()),
      request_id: z.string(),
      issues: z.array(issueSchema).optional().meta({ description: 'With `validation_failed`: each field that failed.' }),
      budget: z
        .record(z.string(), z.union([z.string(), z.number()]))
        .optional()
        .meta({ description: 'With `budget_exceeded`: scope, scope_id, period; for the caller\'s own user or project also the amounts (`*_micros`, integer micro-dollars).' }),
    }),
  })
  .meta({ id: 'Error' });

export function errorResponse(status: number): ZodOpenApiResponseObject {
  const e = ERROR_CODES[status];
  if (!e) throw new Error(`no error codes documented for HTTP ${status}`);
  return {
    description: `${e.description} Codes: ${e.codes.map((c) => `\`${c}\``).join(', ')}.`,
    ...(status === 429 && { headers: { 'retry-after': { description: 'Seconds to wait.', schema: { type: 'integer' } } } }),
    content: { 'application/json': { schema: errorBodySchema } },
  };
}

export type Operation = ZodOpenApiOperationObject;
