import type { RequestHandler } from 'express';
import type { Estimator } from '../auth/admission';

/** What a request passes before a route serves it, per kind of work, built once in app.ts. */
export interface Guards {
  /** Paid chat: the route's estimator reads the body for the worst case admission holds. */
  chat: (estimate: Estimator) => RequestHandler[];
  vision: RequestHandler[];
  costs: RequestHandler[];
  /** External usage: holding a worst case (with an estimator) or reporting and releasing (false). */
  usage: (estimate: Estimator | false) => RequestHandler[];
  admin: RequestHandler[];
}

