import { timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { ApiKeyRecord, ApiKeyStore, KeyScope } from '@tollgate/shared';
import { ApiError } from '../errors';

/** Who the ADMIN_TOKEN authenticates as: the operator, with every scope. */
export const OPERATOR: ApiKeyRecord = {
  key_id: 'admin-token',
  name: 'operator',
  user_id: 'operator',
  project_id: 'operator',
  scopes: ['admin', 'chat', 'vision', 'costs', 'usage'],
  created_at: '1970-01-01T00:00:00.000Z',
};

export interface Principal extends Omit<ApiKeyRecord, 'created_at'> {
  /** Authenticated with the operator's ADMIN_TOKEN rather than an API key. */
  operator: boolean;
}

/** The key presented as `Authorization: Bearer <key>`, if any. */
export function bearer(header: string | undefined): string | undefined {
  const m = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return m?.[1];
}

/** Constant-time comparison of two secrets. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `Authorization: Bearer <key>` (what the OpenAI SDK sends) or `x-api-key`; the ADMIN_TOKEN acts as an admin. */
export function authenticate(keys: ApiKeyStore, adminToken: string | undefined, required: KeyScope): RequestHandler {
  return async (req, res, next) => {
    try {
      const presented = bearer(req.header('authorization')) ?? req.header('x-api-key');
      if (!presented) throw new ApiError('unauthorized', 'An API key is required: send it as "Authorization: Bearer <key>".');
      let principal: Principal | undefined;
      if (adminToken && sameSecret(presented, adminToken)) {
        const { created_at: _created, ...operator } = OPERATOR;
        principal = { ...operator, operator: true };
      } else {
        const record = await keys.verify(presented);
        if (!record) throw new ApiError('unauthorized', 'The API key is not valid or has been revoked.');
        principal = { ...record, operator: false };
        // For long-lived responses (SSE): the key is checked again before more data goes out.
        res.locals.recheckKey = async () => (await keys.verify(presented)) !== null;
      }
      if (!principal.scopes.includes(required) && !principal.scopes.includes('admin')) {
        throw new ApiError('forbidden', `This API key lacks the "${required}" scope.`);
      }
      res.locals.principal = principal;
      next();
    } catch (err) {
      next(err);
    }
  };
}

/**
 * Whether the key that authenticated this request still works. Streams call it before sending
 * more, so a key revoked while its stream is open gets nothing after the revocation. (The
 * ADMIN_TOKEN changes only with a restart.)
 */
export async function stillAuthorized(res: { locals: Record<string, unknown> }): Promise<boolean> {
  const recheck = res.locals.recheckKey as (() => Promise<boolean>) | undefined;
  return recheck ? recheck() : true;
}

export function principalOf(res: { locals: Record<string, unknown> }): Principal {
  return res.locals.principal as Principal;
}
