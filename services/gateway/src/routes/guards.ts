import type { RequestHandler } from 'express';

/** Auth and rate-limit chains per kind of work, built once in app.ts. */
export interface Guards {
  chat: RequestHandler[];
  vision: RequestHandler[];
  costs: RequestHandler[];
  admin: RequestHandler[];
}
