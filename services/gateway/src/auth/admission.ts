import { randomUUID } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import type Redis from 'ioredis';
import {
  alertingKeys,
  type ApiKeyRecord,
  type ApiKeyStore,
  type BudgetPeriod,
  BudgetExceededError,
  type BudgetScope,
  CONVERSATION_MAX_MESSAGES,
  conversationKey,
  finishHold,
  holdKeys,
  JOURNEY_ID,
  journeyKeys,
  STEP_KEY,
  HOLD_MARGIN_MS,
  keyspace,
  type KeyScope,
  ledgerKeys,
  LuaScript,
  PERIODS,
  type PeriodKeys,
  periodBounds,
  periodKeys,
  type TargetBound,
} from '@tollgate/shared';
import { ApiError } from '../errors';
import { bearer, OPERATOR, type Principal, sameSecret } from './middleware';
import ADMIT_SOURCE from './admit-10.lua';

const ADMIT = new LuaScript(ADMIT_SOURCE);

type Verdict =
  | ['unknown']
  | ['forbidden', string]
  | ['journey', string, string]
  | ['rate_limited', string, number, number]
  | ['ok', string, number, number, number?, number?, number?, string?]
  | ['over', string, number, number, number, number, number, number, number, number, number, number];

const WINDOW_MS = 60_000;
const SCOPES: BudgetScope[] = ['user', 'project', 'global'];
const DAY_MS = 86_400_000;

export interface AdmissionOptions {
  redis: Redis;
  namespace: string;
  keys: ApiKeyStore;
  adminToken: string | undefined;
  /** Requests per API key per minute, shared by every gateway instance. */
  perMinute: number;
  /** The request deadline: a hold whose request died is given back after it plus a margin. */
  deadlineMs?: number;
  /** How long past the deadline a dead request's hold lasts (default HOLD_MARGIN_MS). */
  holdMarginMs?: number;
  /** Counts holds given back because their request died. */
  onHoldsExpired?: (n: number) => void;
}

/**
 * What a paid request may cost at most, from its validated body: input tokens of the request
 * itself (an upper bound), a bound per target it may reach, and the conversation whose stored
 * history it will send (its bytes are counted inside the admission script).
 */
export interface PaidWork {
  input_tokens: number;
  bounds: readonly TargetBound[];
  conversation_id?: string;
  /** How long the hold lasts when nothing settles it (default: the request deadline plus the margin). */
  hold_ttl_ms?: number;
}

/** Reads and checks the request for its worst case; throws the request's 4xx when it is invalid. */
export type Estimator = (req: Request, res: Response) => PaidWork;

/** What admission held for a paid request, for its job. */
export interface Hold {
  /** Absent when no hard budget covers the caller: nothing was held. */
  hold_id?: string;
  worst_micros: number;
  /** Bytes of stored history counted into the worst case: the worker sends no more than that. */
  history_bytes: number;
  /** Set when a job took the hold over (see holdFields); otherwise it is given back with the answer. */
  handed_off?: boolean;
  /** When an unsettled hold is given back (epoch ms). */
  expires_at: number;
}

/** The journey a request carries (`x-tollgate-journey`, `x-tollgate-journey-step`), checked at admission. */
export interface RequestJourney {
  id: string;
  step?: string;
}

/** The job and event fields of the request's journey, if it has one. */
export function journeyOf(res: Response): { journey?: string; journey_step?: string } {
  const j = res.locals.journey as RequestJourney | undefined;
  return j ? { journey: j.id, ...(j.step !== undefined && { journey_step: j.step }) } : {};
}

/** The journey header, checked for shape (so a key is never built from junk); absent: undefined. */
function journeyHeader(req: Request): RequestJourney | undefined {
  const id = req.header('x-tollgate-journey');
  const step = req.header('x-tollgate-journey-step');
  if (id === undefined || id === '') {
    if (step !== undefined) throw new ApiError('invalid_request', 'x-tollgate-journey-step needs x-tollgate-journey beside it.');
    return undefined;
  }
  if (!JOURNEY_ID.test(id)) throw new ApiError('invalid_request', 'x-tollgate-journey is not a journey id (jrn_...).');
  if (step !== undefined && !STEP_KEY.test(step)) throw new ApiError('invalid_request', 'x-tollgate-journey-step is not a step key (lower-case letters, digits, - and _).');
  return { id, ...(step !== undefined && { step }) };
}

export function holdOf(res: Response): Hold | undefined {
  return res.locals.hold as Hold | undefined;
}

// Period keys and their held-hash expiries change once a day; computed once per day, not per request.
let periodsCache: { day: string; keys: PeriodKeys; expiries: number[] } | undefined;
function currentPeriods(now: number) {
  const day = new Date(now).toISOString().slice(0, 10);
  if (periodsCache?.day !== day) {
    const keys = periodKeys(now);
    periodsCache = { day, keys, expiries: PERIODS.map((p) => periodBounds(p, keys[p]).end.getTime() + DAY_MS) };
  }
  return periodsCache;
}

/**
 * Authenticates (`Authorization: Bearer <key>` or `x-api-key`; the ADMIN_TOKEN acts as the
 * operator), checks the scope, counts the request against the key's rate limit and, for paid work
 * (`budget`), holds its worst-case cost on the caller's hard budgets, refusing with 402 before
 * anything is enqueued when it does not fit. One Redis round trip for all of it. An invalid body
 * is reported after the key checks, so a caller without a valid key learns nothing from it.
 */
export function admission(opts: AdmissionOptions, scope: KeyScope, { budget }: { budget: Estimator | false }): RequestHandler {
  const rateKey = `${keyspace(opts.namespace)('rl')}:`;
  const ledger = ledgerKeys(opts.namespace);
  const holds = holdKeys(opts.namespace);
  const budgetTemplate = alertingKeys(opts.namespace).budget('{SCOPE}' as BudgetScope, '{ID}');
  const holdTtl = (opts.deadlineMs ?? 60_000) + (opts.holdMarginMs ?? HOLD_MARGIN_MS);
  const journeys = journeyKeys(opts.namespace);

  return async (req, res, next) => {
    try {
      const presented = bearer(req.header('authorization')) ?? req.header('x-api-key');
      if (!presented) throw new ApiError('unauthorized', 'An API key is required: send it as "Authorization: Bearer <key>".');
      const operator = opts.adminToken !== undefined && sameSecret(presented, opts.adminToken);
      if (!operator && !opts.keys.plausible(presented)) throw new ApiError('unauthorized', 'The API key is not valid or has been revoked.');

      let work: PaidWork | undefined;
      let invalid: unknown;
      let journey: RequestJourney | undefined;
      if (budget) {
        try {
          journey = journeyHeader(req);
        } catch (err) {
          invalid = err;
        }
      }
      if (budget && invalid === undefined) {
        try {
          work = budget(req, res);
        } catch (err) {
          invalid = err;
        }
      }
      const keys = [opts.keys.recordKey(operator ? '' : presented)];
      const args: Array<string | number> = [operator ? JSON.stringify(OPERATOR) : '', scope, rateKey, WINDOW_MS, opts.perMinute, work ? 1 : 0];
      const holdId = work ? randomUUID() : '';
      const now = Date.now();
      const expiresAt = now + (work?.hold_ttl_ms ?? holdTtl);
      if (work) {
        const p = currentPeriods(now);
        keys.push(
          ledger.day(p.keys.day),
          ledger.running('week', p.keys.week),
          ledger.running('month', p.keys.month),
          ...PERIODS.map((period) => holds.held(period, p.keys[period])),
          holds.expiry,
          holds.hold(holdId),
          // Cluster-safe either way: every key is under the namespace's hash tag.
          journey ? journeys.journey(journey.id) : holds.expiry,
        );
        args.push(
          now,
          holdId,
          expiresAt,
          holds.holdPrefix,
          budgetTemplate,
          work.conversation_id ? conversationKey(opts.namespace, '{USER}', work.conversation_id) : '',
          CONVERSATION_MAX_MESSAGES,
          work.input_tokens,
          ...p.expiries,
          work.bounds.length,
          ...work.bounds.flatMap((b) => [b.input_per_mtok, b.fixed_micros]),
          journey?.id ?? '',
        );
      }
      const verdict = (await ADMIT.run(opts.redis, keys, args)) as Verdict;

      if (verdict[0] === 'unknown') throw new ApiError('unauthorized', 'The API key is not valid or has been revoked.');
      if (verdict[0] === 'forbidden') throw new ApiError('forbidden', `This API key lacks the "${scope}" scope.`);
      if (verdict[0] === 'journey') {
        const why = verdict[2];
        if (why === 'missing') throw new ApiError('not_found', `No journey "${journey!.id}".`);
        if (why === 'forbidden') throw new ApiError('forbidden', 'This journey belongs to another user: a key may only use its own user\'s journeys.');
        throw new ApiError('conflict', `The journey is ${why}: start a new one to record more against it.`);
      }
      const record = JSON.parse(verdict[1]) as ApiKeyRecord;
      const { created_at: _created, ...rest } = record;
      const principal: Principal = { ...rest, operator };
      res.locals.principal = principal;
      // For long-lived responses (SSE): the key is checked again before more data goes out.
      if (!operator) res.locals.recheckKey = async () => (await opts.keys.verify(presented)) !== null;
      const [, , count, ttl] = verdict;
      res.setHeader('x-ratelimit-limit', String(opts.perMinute));
      res.setHeader('x-ratelimit-remaining', String(Math.max(0, opts.perMinute - count)));
      if (verdict[0] === 'rate_limited') {
        throw new ApiError('rate_limited', `Rate limit of ${opts.perMinute} requests per minute reached for this API key.`, { retry_after_ms: ttl });
      }
      if (invalid !== undefined) throw invalid;
      if (verdict[0] === 'over') {
        const [, , , , worst, , expired, s, p, spent, held, limit] = verdict;
        if (expired > 0) opts.onHoldsExpired?.(expired);
        const scopeName = SCOPES[s - 1]!;
        throw new BudgetExceededError(scopeName, scopeName === 'user' ? principal.user_id : scopeName === 'project' ? principal.project_id : 'global', PERIODS[p - 1] as BudgetPeriod, {
          spent_micros: spent,
          held_micros: held,
          limit_micros: limit,
          request_worst_case_micros: worst,
        });
      }
      if (work) {
        const [, , , , worst = 0, history = 0, expired = 0, id = ''] = verdict;
        if (expired > 0) opts.onHoldsExpired?.(expired);
        if (journey) res.locals.journey = journey;
        const hold: Hold = { worst_micros: worst, history_bytes: history, expires_at: expiresAt, ...(id !== '' && { hold_id: id }) };
        res.locals.hold = hold;
        if (id !== '') {
          res.setHeader('x-tollgate-budget-hold-micros', String(worst));
          // A request answered without a job (a cache hit, a 4xx after admission) gives its hold
          // back with the answer. Not on a dropped connection: the route may still enqueue the job,
          // so that hold waits for its expiry.
          res.once('finish', () => {
            if (!hold.handed_off) finishHold(opts.redis, opts.namespace, id, 0).catch(() => undefined);
          });
        }
      }
      next();
    } catch (err) {
      next(err);
    }
  };
}
