import type { RequestHandler } from 'express';
import type { Estimator } from '../auth/admission';

/** What a request passes before a route serves it, per kind of work, built once in app.ts. */
export interface Guards {
  /** Paid chat: the route's estimator reads the body for the worst case admission holds. */
  chat: (estimate: Estimator) => RequestHandler[];
  vision: RequestHandler[];
  costs: RequestHandler[];
  admin: RequestHandler[];
}

