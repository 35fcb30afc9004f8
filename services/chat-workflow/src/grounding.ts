import {
  GROUNDING_CONTEXT_MAX_BYTES,
  GROUNDING_OUTPUT_CAP,
  type CacheKey,
  cacheKey,
  type CacheSettingsStore,
  type ChatJob,
  type ChatMessage,
  type CompletionResult,
  DeadlineExceededError,
  type GroundingResult,
  price,
  type PriceTable,
  type ProviderClient,
  type RecoveryOptions,
  type ResponseCache,
  searchMicros,
  ttlFor,
  usageUnitsSchema,
  withRecovery,
  type WorkflowRun,
} from '@tollgate/shared';
import { z } from 'zod';

/** The retrieved context as cached for 5 minutes (by default) per tenant and question. */
const contextSchema = z.object({
  text: z.string(),
  provider: z.literal('gemini'),
  model: z.string(),
  units: usageUnitsSchema,
  usage_source: z.enum(['provider', 'tokenizer']),
  queries: z.array(z.string()),
  sources: z.array(z.object({ title: z.string(), uri: z.string() })),
  entry_point_html: z.string().optional(),
  cost_micros: z.number().int().nonnegative(),
  search_micros: z.number().int().nonnegative(),
  /** The request that paid for the search. */
  request_id: z.string(),
});
export type RetrievedContext = z.infer<typeof contextSchema>;

export interface GroundingDeps {
  gemini: ProviderClient;
  cache: ResponseCache;
  cacheSettings: CacheSettingsStore;
  priceTable: PriceTable;
  namespace: string;
}

export interface Retrieval {
  context: RetrievedContext;
  cached: boolean;
  /** On a hit: what the reused retrieval cost when it was paid for. */
  avoided_micros?: number;
}

const SERVICE = 'chat-workflow';

/** What the retrieval call sends: the question, and the grounding options. Every field shapes the context. */
function retrievalRequest(job: ChatJob, model: string) {
  const question = [...job.messages].reverse().find((m) => m.role === 'user')?.content ?? '';
  const messages: ChatMessage[] = [{ role: 'user', content: question }];
  const timeRange = job.grounding?.time_range;
  // Capped, so the budget hold admission made for the search bounds what it can cost.
  return { model, messages, maxOutputTokens: GROUNDING_OUTPUT_CAP, grounding: timeRange ? { timeRange } : {} };
}

export function ragCacheKey(namespace: string, job: ChatJob, model: string): CacheKey {
  return cacheKey(namespace, { project: job.project_id, user: job.user_id }, 'rag', job.cache?.partition ?? 'default', retrievalRequest(job, model));
}

/**
 * Context for a grounded chat: Gemini with the googleSearch tool answers the question from the
 * web; its text and sources become the context of the answer. The same question from the same
 * tenant within the RAG TTL reuses it (no second search fee); concurrent identical questions
 * search once. Publishes `rag.context_retrieved` and the retrieval's own `usage.recorded`
 * (operation `rag`, the search fee in its units).
 */
export async function retrieveContext(job: ChatJob, jobId: string, run: WorkflowRun, deps: GroundingDeps, recovery: Omit<RecoveryOptions, 'operation'>): Promise<Retrieval> {
  const model = job.grounding?.model ?? 'gemini-2.0-flash';
  const key = ragCacheKey(deps.namespace, job, model);
  const mode = job.cache?.mode ?? 'default';
  const settings = await deps.cacheSettings.get(job.project_id);
  const ttl = mode === 'bypass' ? 0 : ttlFor('rag', settings, undefined);
  const started = Date.now();

  const served = async (hit: RetrievedContext): Promise<Retrieval> => {
    await deps.cache.record(key, 'HIT', hit.cost_micros).catch(() => undefined);
    await publish(run, job, hit, { cached: true, latencyMs: Date.now() - started });
    return { context: hit, cached: true, avoided_micros: hit.cost_micros };
  };

  if (mode === 'default' && ttl > 0) {
    const hit = await deps.cache.get(key, contextSchema, job.cache?.max_age_seconds);
    if (hit) return served(hit.value);
  }

  const search = async (): Promise<Retrieval> => {
    const outcome = await withRecovery(
      [{ provider: 'gemini', model }],
      (t, signal) => deps.gemini.complete({ ...retrievalRequest(job, t.model), signal }),
      { ...recovery, operation: 'rag' },
    );
    const context = toContext(outcome.value, job, deps.priceTable);
    await publish(run, job, context, { cached: false, latencyMs: Date.now() - started });
    // Only a complete answer with text is worth reusing; a failure never reaches here.
    if (ttl > 0 && context.text) {
      await deps.cache.put(key, context, ttl).catch(() => undefined);
      await deps.cache.record(key, mode === 'refresh' ? 'REFRESH' : 'MISS').catch(() => undefined);
    } else if (mode === 'bypass') {
      await deps.cache.record(key, 'BYPASS').catch(() => undefined);
    }
    return { context, cached: false };
  };

  if (ttl <= 0 || mode !== 'default') return search();
  // Identical questions in flight together search once, in this worker and across workers: the
  // others wait for the entry and are served from it (each run publishes its own hit).
  const token = await deps.cache.claim(key, Math.max(1, job.deadline_at - Date.now()), `job:${jobId}`);
  if (!token) {
    const other = await deps.cache.awaitOther(key, contextSchema, job.deadline_at);
    if (other) return served(other.value);
    if (Date.now() >= job.deadline_at) throw new DeadlineExceededError('The request deadline passed while waiting for an identical search');
    return search();
  }
  try {
    return await search();
  } finally {
    await deps.cache.release(key, token).catch(() => undefined);
  }
}

function toContext(result: CompletionResult, job: ChatJob, table: PriceTable): RetrievedContext {
  const g: GroundingResult = result.grounding ?? { queries: [], sources: [], supports: [] };
  let cost = 0;
  let search = 0;
  try {
    const priced = price({ provider: result.provider, model: result.model, units: result.units }, { table });
    cost = priced.amount_micros;
    search = searchMicros(priced);
  } catch {
    // The ledger dead-letters what it cannot price; the event then says 0.
  }
  return {
    text: result.text,
    provider: 'gemini',
    model: result.model,
    units: result.units,
    usage_source: result.usageSource,
    queries: g.queries,
    sources: g.sources,
    ...(g.entryPointHtml && { entry_point_html: g.entryPointHtml }),
    cost_micros: cost,
    search_micros: search,
    request_id: job.request_id,
  };
}

/** The retrieval's usage (free on a hit, with what it saved) and `rag.context_retrieved`, in one round trip. */
async function publish(run: WorkflowRun, job: ChatJob, c: RetrievedContext, o: { cached: boolean; latencyMs: number }): Promise<void> {
  await run.publishAll([
    {
      type: 'usage.recorded',
      data: {
        provider: c.provider,
        model: c.model,
        service: SERVICE,
        operation: 'rag',
        units: c.units,
        usage_source: o.cached ? 'cache' : c.usage_source,
        request_id: job.request_id,
        cached: o.cached,
        ...(o.cached && { avoided_micros: c.cost_micros, reused_request_id: c.request_id }),
        ...(job.hold_id && { hold_id: job.hold_id }),
      },
    },
    {
      type: 'rag.context_retrieved',
      data: {
        source: 'google_search',
        query_chars: c.queries.reduce((n, q) => n + q.length, 0),
        documents: c.sources.length,
        latency_ms: o.latencyMs,
        provider: c.provider,
        model: c.model,
        queries: c.queries.slice(0, 100).map((q) => q.slice(0, 1000)),
        sources: c.sources.slice(0, 100).map((s) => ({ title: s.title.slice(0, 1000), uri: s.uri.slice(0, 4096) })),
        cost_micros: o.cached ? 0 : c.cost_micros,
        search_micros: o.cached ? 0 : c.search_micros,
        cached: o.cached,
        ...(o.cached && { avoided_micros: c.cost_micros }),
      },
    },
  ]);
}

/** The context as the answering model sees it: the sources, numbered, and what the search found. */
export function contextMessage(c: RetrievedContext): ChatMessage {
  const sources = c.sources.map((s, i) => `[${i + 1}] ${s.title} <${s.uri}>`).join('\n');
  const content = `Answer using this context from a Google Search, citing sources by number.\n\nSources:\n${sources || '(none)'}\n\nFindings:\n${c.text}`;
  // Bounded, as the budget hold counted it: the answer's input never exceeds what was held for.
  return { role: 'system', content: truncateUtf8(content, GROUNDING_CONTEXT_MAX_BYTES - 64) };
}

function truncateUtf8(text: string, maxBytes: number): string {
  const buf = Buffer.from(text);
  if (buf.length <= maxBytes) return text;
  // Dropping a split trailing character keeps the result valid UTF-8.
  return buf.subarray(0, maxBytes).toString('utf8').replace(/\uFFFD$/, '');
}
