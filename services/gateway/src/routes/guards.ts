import type { RequestHandler } from 'express';

/** What a request passes before a route serves it, per kind of work, built once in app.ts. */
export interface Guards {
  chat: RequestHandler[];
  vision: RequestHandler[];
  costs: RequestHandler[];
  admin: RequestHandler[];
}

