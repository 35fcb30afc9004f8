import type { Request, Response } from 'express';
import {
  type CacheDirective,
  CacheDirectiveError,
  type CacheKey,
  cacheKey,
  type CacheSettingsStore,
  type CacheStatus,
  type Cached,
  type ChatJobResult,
  chatJobResultSchema,
  type EventBus,
  formatUsd,
  type JobCache,
  parseCacheDirective,
  type PriceTable,
  type ResponseCache,
  ttlFor,
} from '@tollgate/shared';
import { z } from 'zod';
import type { Principal } from './auth/middleware';
import { ApiError } from './errors';
import { costOf } from './routes/chat';

export type OkResult = Extract<ChatJobResult, { ok: true }>;

/** A stored answer: the complete successful result, who paid for it and what it cost them. */
const storedSchema = z.object({
  result: chatJobResultSchema.options[0],
  request_id: z.string(),
  cost_micros: z.number().int().nonnegative(),
});
export type StoredAnswer = z.infer<typeof storedSchema>;

export interface AnswerCacheDeps {
  cache: ResponseCache;
  settings: CacheSettingsStore;
  /** Where a hit's zero-cost usage (the ledger writes it with avoided_micros) and its answer event go. */
  bus: EventBus;
  priceTable: PriceTable;
  namespace: string;
}

/** `Cache-Control` and `x-tollgate-cache-namespace` of a request; a malformed one is a 400. */
export function cacheDirectiveOf(req: Request): CacheDirective {
  try {
    return parseCacheDirective(req.header('cache-control'), req.header('x-tollgate-cache-namespace'));
  } catch (err) {
    if (err instanceof CacheDirectiveError) throw new ApiError('invalid_request', err.message);
    throw err;
  }
}

/** The directive as a job carries it to a worker. */
export function jobCacheOf(d: CacheDirective): JobCache {
  return { mode: d.mode, partition: d.partition, ...(d.maxAgeSeconds !== undefined && { max_age_seconds: d.maxAgeSeconds }) };
}

export type Lookup =
  | { status: 'BYPASS'; reason: string }
  | { status: 'HIT'; key: CacheKey; hit: Cached<StoredAnswer> }
  | { status: 'MISS' | 'REFRESH'; key: CacheKey; ttl: number };

/** What a request paid in all: the answer and, for a grounded one, its retrieval. */
export function paidMicros(result: OkResult, table: PriceTable): number {
  return (costOf(result.provider, result.model, result.units, table)?.micros ?? 0) + (result.grounding?.cost_micros ?? 0);
}

/**
 * The gateway's chat answer cache. Off by default (a chat answer is not assumed repeatable):
 * `Cache-Control: max-age=N` or the project's `chat_ttl_seconds` turn it on. A hit is answered
 * here, without the queue, and recorded in the ledger at zero cost with what it saved.
 */
export class AnswerCache {
  constructor(private readonly deps: AnswerCacheDeps) {}

  async lookup(who: Principal, directive: CacheDirective, shape: unknown, cacheable: true | string): Promise<Lookup> {
    if (cacheable !== true) return { status: 'BYPASS', reason: cacheable };
    if (directive.mode === 'bypass') return { status: 'BYPASS', reason: 'no-store' };
    const settings = await this.deps.settings.get(who.project_id);
    const ttl = ttlFor('chat', settings, directive.maxAgeSeconds);
    if (ttl <= 0 && directive.maxAgeSeconds === undefined) return { status: 'BYPASS', reason: 'chat caching is off for this project (send Cache-Control: max-age=N)' };
    const key = cacheKey(this.deps.namespace, { project: who.project_id, user: who.user_id }, 'chat', directive.partition, shape);
    if (directive.mode === 'refresh') return { status: 'REFRESH', key, ttl };
    const hit = await this.deps.cache.get(key, storedSchema, directive.maxAgeSeconds);
    return hit ? { status: 'HIT', key, hit } : { status: 'MISS', key, ttl };
  }

  /**
   * Runs a MISS or REFRESH: identical requests in flight together pay once. The one that claims
   * the key computes; the others wait for its entry and are served as hits. A failure is never
   * stored, so its waiters compute for themselves.
   */
  async compute(l: Extract<Lookup, { status: 'MISS' | 'REFRESH' }>, requestId: string, deadlineAt: number, run: () => Promise<ChatJobResult>): Promise<{ result: ChatJobResult } | { reused: Cached<StoredAnswer> }> {
    const token = await this.deps.cache.claim(l.key, Math.max(1, deadlineAt - Date.now()));
    if (!token) {
      const other = await this.deps.cache.awaitOther(l.key, storedSchema, deadlineAt);
      if (other) return { reused: other };
      return { result: await run() };
    }
    try {
      const result = await run();
      if (result.ok) await this.store(l, requestId, result);
      return { result };
    } finally {
      await this.deps.cache.release(l.key, token).catch(() => undefined);
    }
  }

  /** Keeps a complete, successful answer; counts the miss. */
  async store(l: Extract<Lookup, { status: 'MISS' | 'REFRESH' }>, requestId: string, result: OkResult): Promise<void> {
    try {
      await this.deps.cache.put(l.key, { result, request_id: requestId, cost_micros: paidMicros(result, this.deps.priceTable) } satisfies StoredAnswer, l.ttl);
      await this.deps.cache.record(l.key, l.status);
    } catch {
      // The answer is paid for and in hand; losing the entry only costs a future call.
    }
  }

  /**
   * Records a hit in one round trip: the ledger gets a zero-cost entry with what it avoided and
   * the request it reused, and `chat.response_generated` (marked cached) says the request was
   * answered, so whatever waits for an answer (a journey step) sees it as it would a worker's.
   * No `workflow.*` events: analytics counts a hit once, from its `cost.recorded`, as before.
   * Then the stats count it.
   */
  async recordHit(key: CacheKey, hit: Cached<StoredAnswer>, requestId: string, who: Principal, context: HitContext = {}): Promise<void> {
    const r = hit.value.result;
    const meta = {
      correlation_id: requestId,
      user_id: who.user_id,
      project_id: who.project_id,
      ...(context.journey !== undefined && { journey_id: context.journey }),
      ...(context.journey_step !== undefined && { journey_step: context.journey_step }),
    };
    await Promise.all([
      this.deps.bus.publishMany([
        {
          type: 'usage.recorded',
          data: {
            provider: r.provider,
            model: r.model,
            service: 'gateway',
            operation: 'chat',
            units: r.units,
            usage_source: 'cache',
            request_id: requestId,
            cached: true,
            avoided_micros: hit.value.cost_micros,
            reused_request_id: hit.value.request_id,
          },
          meta,
        },
        {
          type: 'chat.response_generated',
          data: {
            // As the worker names it: the request's conversation, else the request itself.
            conversation_id: context.conversation_id ?? requestId,
            provider: r.provider,
            model: r.model,
            response_chars: r.reply.length,
            input_tokens: r.units.input_tokens ?? 0,
            output_tokens: r.units.output_tokens ?? 0,
            latency_ms: 0,
            // The schema counts provider calls from 1; a stored answer had at least one.
            attempts: Math.max(1, r.attempts.length),
            fallback_used: r.fallback_used,
            cached: true,
          },
          meta,
        },
      ]),
      this.deps.cache.record(key, 'HIT', hit.value.cost_micros).catch(() => undefined),
    ]);
  }
}

/** What a hit's events carry besides the caller: the journey (and step) and the conversation. */
export interface HitContext {
  journey?: string;
  journey_step?: string;
  conversation_id?: string;
}

/** Response headers: the status, and on a hit its age and what it saved. */
export function setCacheHeaders(res: Response, status: CacheStatus, hit?: Cached<StoredAnswer>): void {
  res.setHeader('x-tollgate-cache', status);
  if (hit) {
    res.setHeader('age', String(hit.age_seconds));
    res.setHeader('x-tollgate-cache-saved-micros', String(hit.value.cost_micros));
    res.setHeader('x-tollgate-cache-saved-usd', formatUsd(hit.value.cost_micros));
  }
}

/** The body's `cache` block. */
export function cacheInfo(status: CacheStatus, hit?: Cached<StoredAnswer>, reason?: string) {
  return {
    status,
    ...(reason && { reason }),
    ...(hit && {
      age_seconds: hit.age_seconds,
      reused_request_id: hit.value.request_id,
      saved: { micros: hit.value.cost_micros, usd: formatUsd(hit.value.cost_micros) },
    }),
  };
}
