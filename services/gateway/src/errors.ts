import type { ErrorRequestHandler, Response } from 'express';
import { BudgetExceededError, classify, TollgateError } from '@tollgate/shared';
import { ZodError } from 'zod';

/**
 * An error the gateway raises itself, whose message was written for the client. `code` must be
 * one the classifier knows (invalid_request, validation_failed, payload_too_large, unauthorized,
 * forbidden, rate_limited, not_found, budget_exceeded, deadline_exceeded...).
 */
export class ApiError extends TollgateError {
  readonly publicMessage: string;
  constructor(code: string, publicMessage: string, details?: Record<string, unknown>) {
    super(code, publicMessage, { details });
    this.publicMessage = publicMessage;
  }
}

export interface ErrorBody {
  error: {
    code: string;
    category: string;
    message: string;
    suggested_actions: string[];
    request_id: string;
    issues?: Array<{ path: string; message: string }>;
    budget?: Record<string, string | number>;
  };
}

/** The one error shape every endpoint answers with; never a stack, never internals. */
export function sendError(res: Response, error: unknown): void {
  const c = classify(error);
  const requestId = String(res.locals.requestId ?? '');
  const body: ErrorBody = {
    error: {
      code: c.code,
      category: c.category,
      message: error instanceof ApiError ? error.publicMessage : c.userMessage,
      suggested_actions: c.suggestedActions,
      request_id: requestId,
      ...(error instanceof ZodError && {
        issues: error.issues.map((i) => ({ path: i.path.join('.') || '(body)', message: i.message })),
      }),
      ...(error instanceof BudgetExceededError && { budget: budgetDetails(error) }),
    },
  };
  if (c.retryAfterMs !== undefined) res.setHeader('retry-after', String(Math.max(1, Math.ceil(c.retryAfterMs / 1000))));
  res.status(c.httpStatus).json(body);
}

/**
 * Which budget refused and, for the caller's own user or project, by how much; the global
 * budget's figures are every tenant's spend together, so only its name is given.
 */
function budgetDetails(e: BudgetExceededError): Record<string, string | number> {
  const where = { scope: e.scope, scope_id: e.scopeId, period: e.period };
  if (e.scope === 'global') return where;
  const amounts = Object.entries(e.amounts).filter((kv): kv is [string, number] => kv[1] !== undefined);
  return { ...where, ...Object.fromEntries(amounts) };
}

/** Sends a failure a worker already classified (job results carry no error objects). */
export function sendJobError(
  res: Response,
  e: { code: string; category: string; message: string; suggested_actions: string[]; http_status: number; retry_after_ms?: number },
): void {
  if (e.retry_after_ms !== undefined) res.setHeader('retry-after', String(Math.max(1, Math.ceil(e.retry_after_ms / 1000))));
  const body: ErrorBody = {
    error: { code: e.code, category: e.category, message: e.message, suggested_actions: e.suggested_actions, request_id: String(res.locals.requestId ?? '') },
  };
  res.status(e.http_status).json(body);
}

export const errorHandler: ErrorRequestHandler = (err, _req, res, _next) => {
  if (res.headersSent) {
    res.end();
    return;
  }
  // body-parser marks a malformed body; say so plainly rather than "invalid request".
  if ((err as { type?: string }).type === 'entity.parse.failed') {
    sendError(res, new ApiError('invalid_request', 'The request body is not valid JSON.'));
    return;
  }
  // The router could not percent-decode a path parameter (status 400, but no `expose`): the
  // client's URL is malformed, which must not read as "the AI provider rejected the request".
  if ((err as { name?: string } | null)?.name === 'URIError') {
    sendError(res, new ApiError('invalid_request', 'The URL path is not valid percent-encoding.'));
    return;
  }
  sendError(res, err);
};
