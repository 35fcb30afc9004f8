import type { NextFunction, Request, RequestHandler, Response } from 'express';

/** Auth and rate-limit chains per kind of work, built once in app.ts. */
export interface Guards {
  chat: RequestHandler[];
  vision: RequestHandler[];
  costs: RequestHandler[];
  admin: RequestHandler[];
}

/**
 * Runs independent checks side by side (each a Redis read), so a request waits for one round trip
 * instead of one per check. Passes on the first check's error in the order given, else continues.
 */
export function concurrently(...checks: RequestHandler[]): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const outcomes: unknown[] = new Array(checks.length);
    let pending = checks.length;
    checks.forEach((check, i) => {
      let settled = false;
      const done = (err?: unknown) => {
        if (settled) return;
        settled = true;
        outcomes[i] = err;
        if (--pending === 0) next(outcomes.find((e) => e !== undefined && e !== null));
      };
      try {
        void check(req, res, done);
      } catch (err) {
        done(err);
      }
    });
  };
}
