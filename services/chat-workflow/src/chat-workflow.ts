import { createHash } from 'node:crypto';
import type Redis from 'ioredis';
import {
  type BackoffOptions,
  type BreakerRegistry,
  type CacheSettingsStore,
  type ChatJob,
  type ChatJobResult,
  type ChatMessage,
  chainFor,
  chatOutputKey,
  chatReplyKey,
  type CompletionChunk,
  type CompletionResult,
  countMessageTokens,
  countTokens,
  DeadlineExceededError,
  type EventBus,
  finishHold,
  messageBytes,
  type GroundingOutcome,
  type PriceTable,
  type ProviderClient,
  type ProviderName,
  type RecoveryDecision,
  type RunEvent,
  RecoveryFailedError,
  type ResponseCache,
  type Target,
  withRecovery,
  WorkflowRun,
} from '@tollgate/shared';
import type { ConversationStore } from './conversation-store';
import { contextMessage, type Retrieval, retrieveContext } from './grounding';
import { OutputStream } from './output-stream';

export const SERVICE = 'chat-workflow';

export interface ChatDeps {
  bus: EventBus;
  redis: Redis;
  namespace: string;
  conversations: ConversationStore;
  clients: Record<ProviderName, ProviderClient>;
  breakers: BreakerRegistry;
  fallbackChain: Target[];
  callTimeoutMs: number;
  maxAttempts: number;
  backoff?: BackoffOptions;
  /** The caching service (grounded chat's RAG context); the worker builds one when absent. */
  cache?: ResponseCache;
  cacheSettings?: CacheSettingsStore;
  /** Prices the retrieval for rag.context_retrieved (the ledger prices it again, authoritatively). */
  priceTable?: PriceTable;
}

/** ChatDeps with the caching parts filled in (createChatWorker does it once per process). */
export type ChatRunDeps = ChatDeps & Required<Pick<ChatDeps, 'cache' | 'cacheSettings' | 'priceTable'>>;

/**
 * One chat turn: history in, provider call with recovery, usage out. Never throws for a provider
 * or input failure; the result says what went wrong in the client's terms.
 */
export async function runChatWorkflow(job: ChatJob, jobId: string, deps: ChatRunDeps): Promise<ChatJobResult> {
  const run = new WorkflowRun({
    bus: deps.bus,
    workflow: 'chat',
    service: SERVICE,
    correlationId: job.request_id,
    userId: job.user_id,
    projectId: job.project_id,
    jobId,
    tags: {
      streamed: job.stream,
      ...(job.route && { route: job.route }),
      ...(job.journey && { journey: job.journey }),
      ...(job.flag_variant && { flag_variant: job.flag_variant }),
    },
    ...(job.journey_step && { journeyStep: job.journey_step }),
    ...(job.enqueued_at && { enqueuedAt: job.enqueued_at }),
  });
  const output = !job.stream
    ? undefined
    : job.reply_to
      ? new OutputStream(deps.redis, chatReplyKey(deps.namespace, job.reply_to), jobId)
      : new OutputStream(deps.redis, chatOutputKey(deps.namespace, jobId));
  const attempts: RecoveryFailedError['attempts'] = [];
  const recorded: Array<Promise<unknown>> = [];

  try {
    const stored = job.conversation_id ? await deps.conversations.load(job.user_id, job.conversation_id) : [];
    const history = job.history_max_bytes === undefined ? stored : newestWithin(stored, job.history_max_bytes);
    const messages = [...history, ...job.messages];
    const lastUser = [...job.messages].reverse().find((m) => m.role === 'user');
    await run.start({
      type: 'chat.message_received',
      data: {
        conversation_id: job.conversation_id ?? job.request_id,
        message_chars: lastUser?.content.length ?? 0,
        history_messages: history.length,
        ...(job.model && { model_requested: job.model }),
      },
    });

    // A job picked up after its caller gave up is not worth paying for.
    const remaining = job.deadline_at - Date.now();
    if (remaining <= 0) throw new DeadlineExceededError('The request deadline passed before the chat started');

    const recovery = {
      // Errors recovery absorbed are recorded with how; the one that ends the run goes to run.fail.
      onError: (err: unknown, _c: unknown, t: Target, decision: RecoveryDecision) => {
        if (decision === 'fail') return;
        recorded.push(run.recordError(err, decision === 'retry' ? 'retried' : 'fell_back', { ...t, operation: 'chat' }).catch(() => undefined));
      },
      breakers: deps.breakers,
      operation: 'chat',
      deadlineMs: remaining,
      callTimeoutMs: deps.callTimeoutMs,
      maxAttempts: deps.maxAttempts,
      backoff: deps.backoff,
    };
    let retrieval: Retrieval | undefined;
    if (job.grounding) {
      retrieval = await retrieveContext(job, jobId, run, { gemini: deps.clients.gemini, cache: deps.cache, cacheSettings: deps.cacheSettings, priceTable: deps.priceTable, namespace: deps.namespace }, recovery);
      // The search took part of the deadline; the answer gets what is left.
      recovery.deadlineMs = job.deadline_at - Date.now();
      if (recovery.deadlineMs <= 0) throw new DeadlineExceededError('The request deadline passed while the context was retrieved');
    }
    const asked = retrieval ? [contextMessage(retrieval.context), ...messages] : messages;
    const chain: Array<Target & { max_output_tokens?: number }> = job.targets ?? chainFor(job.model, deps.fallbackChain);
    const request = (t: (typeof chain)[number], signal: AbortSignal) => {
      const cap = t.max_output_tokens ?? job.max_output_tokens;
      return { messages: asked, model: t.model, signal, ...(cap && { maxOutputTokens: cap }) };
    };

    let result: CompletionResult;
    let outcome;
    const timing: StreamTiming = {};
    if (output) {
      outcome = await withRecovery(chain, async (t, signal) => {
        const it = deps.clients[t.provider].stream(request(t, signal))[Symbol.asyncIterator]();
        // The first chunk proves the provider answered; failures before it can still fall back.
        return { it, first: await it.next() };
      }, recovery);
      result = await pumpStream(outcome.value.it, outcome.value.first, output, run, outcome.target, asked, job.hold_id, timing);
    } else {
      outcome = await withRecovery(chain, (t, signal) => deps.clients[t.provider].complete(request(t, signal)), recovery);
      result = outcome.value;
    }
    const served = outcome.attempts.find((a) => a.outcome === 'ok');
    attempts.push(...outcome.attempts);
    await Promise.all(recorded);

    // The call is billed: its usage goes out first, with the rest of the run's end, in one round trip.
    await run.complete(
      {
        provider: result.provider,
        model: result.model,
        attempts: outcome.attempts.length,
        fallback_used: outcome.fallbackUsed,
        input_tokens: result.units.input_tokens ?? 0,
        output_tokens: result.units.output_tokens ?? 0,
        // Time to first token is the first content chunk (not the first byte, not the whole answer).
        ...(timing.firstContentAt !== undefined && {
          ttft_ms: run.sinceEnqueuedMs(timing.firstContentAt),
          generation_ms: Math.max(0, (timing.lastContentAt ?? timing.firstContentAt) - timing.firstContentAt),
        }),
        ...(!output && served && { generation_ms: Math.max(0, Math.round(served.durationMs)) }),
      },
      usageEvent(job, result, asked),
      {
      type: 'chat.response_generated',
      data: {
        conversation_id: job.conversation_id ?? job.request_id,
        provider: result.provider,
        model: result.model,
        response_chars: result.text.length,
        input_tokens: result.units.input_tokens ?? 0,
        output_tokens: result.units.output_tokens ?? 0,
        latency_ms: run.elapsedMs,
        attempts: outcome.attempts.length,
        fallback_used: outcome.fallbackUsed,
        cached: false,
      },
      },
    );
    if (job.conversation_id) {
      // The answer is paid for and ready: a history write that fails costs the next turn its
      // context, not this turn its answer. It is recorded as a degraded run.
      await deps.conversations
        .append(job.user_id, job.conversation_id, [...job.messages, { role: 'assistant', content: result.text }])
        .catch((err: unknown) => run.recordError(err, 'degraded').catch(() => undefined));
    }

    const done: ChatJobResult = {
      ok: true,
      reply: result.text,
      ...(job.conversation_id && { conversation_id: job.conversation_id }),
      provider: result.provider,
      model: result.model,
      units: result.units,
      usage_source: result.usageSource,
      attempts: outcome.attempts,
      fallback_used: outcome.fallbackUsed,
      ...(retrieval && { grounding: groundingOutcome(retrieval) }),
    };
    await output?.end({ kind: 'done', result: done });
    return done;
  } catch (error) {
    if (error instanceof RecoveryFailedError) attempts.push(...error.attempts);
    await Promise.all(recorded);
    const last = attempts[attempts.length - 1];
    const failed: ChatJobResult = {
      ok: false,
      attempts,
      error: await run.failure(error, {
        attempts: attempts.length,
        fallback_used: new Set(attempts.map((a) => `${a.provider}/${a.model}`)).size > 1,
        ...(last && { provider: last.provider, model: last.model }),
      }),
    };
    await output?.end({ kind: 'done', result: failed });
    return failed;
  } finally {
    if (job.hold_id) {
      await finishHold(deps.redis, deps.namespace, job.hold_id, run.billedCalls).catch((err: unknown) =>
        // The hold then expires with its deadline: money is held a little longer, never lost.
        run.recordError(err, 'degraded').catch(() => undefined),
      );
    }
  }
}

/** The newest messages whose JSON fits `maxBytes`: what the budget hold counted at admission. */
function newestWithin(history: ChatMessage[], maxBytes: number): ChatMessage[] {
  let bytes = 0;
  let i = history.length;
  while (i > 0) {
    const next = bytes + messageBytes([history[i - 1]!]);
    if (next > maxBytes) break;
    bytes = next;
    i--;
  }
  return history.slice(i);
}

function groundingOutcome(r: Retrieval): GroundingOutcome {
  const c = r.context;
  return {
    queries: c.queries,
    sources: c.sources,
    ...(c.entry_point_html && { search_entry_point_html: c.entry_point_html }),
    provider: c.provider,
    model: c.model,
    cached: r.cached,
    cost_micros: r.cached ? 0 : c.cost_micros,
    search_micros: r.cached ? 0 : c.search_micros,
    ...(r.avoided_micros !== undefined && { avoided_micros: r.avoided_micros }),
  };
}

/** What was asked, as a hash: the ledger counts identical requests a cache would have absorbed. */
function fingerprint(model: string, messages: ChatMessage[]): string {
  return createHash('sha256').update(JSON.stringify([model, messages])).digest('hex');
}

function usageEvent(job: ChatJob, result: CompletionResult, messages: ChatMessage[]): RunEvent {
  return {
    type: 'usage.recorded',
    data: {
      provider: result.provider,
      model: result.model,
      service: SERVICE,
      operation: 'chat',
      units: result.units,
      usage_source: result.usageSource,
      request_id: job.request_id,
      cached: false,
      // Where the answer cache is on, its repeats are not evidence that a cache would help.
      ...(!job.answer_cached && { request_fingerprint: fingerprint(result.model, messages) }),
      ...(job.hold_id && { hold_id: job.hold_id }),
    },
  };
}

/**
 * Relays a provider stream to the job's output stream. If the provider breaks off mid-answer the
 * tokens already produced were still billed: they are counted with the tokenizer and recorded
 * before the failure propagates, so a broken stream is never a $0 call.
 */
async function pumpStream(
  it: AsyncIterator<CompletionChunk>,
  first: IteratorResult<CompletionChunk>,
  output: OutputStream,
  run: WorkflowRun,
  target: Target,
  messages: ChatMessage[],
  holdId: string | undefined,
  timing: StreamTiming,
): Promise<CompletionResult> {
  let partial = '';
  try {
    for (let step = first; !step.done; step = await it.next()) {
      const chunk = step.value;
      if (chunk.type === 'done') {
        output.hold();
        return chunk.result;
      }
      if (chunk.text) {
        timing.lastContentAt = Date.now();
        timing.firstContentAt ??= timing.lastContentAt;
      }
      partial += chunk.text;
      output.push({ kind: 'delta', text: chunk.text });
    }
    throw new Error('provider stream ended without a final chunk');
  } catch (error) {
    await run.publish('usage.recorded', {
      provider: target.provider,
      model: target.model,
      service: SERVICE,
      operation: 'chat',
      units: { input_tokens: countMessageTokens(messages), output_tokens: countTokens(partial) },
      usage_source: 'tokenizer',
      request_id: run.meta().correlation_id,
      cached: false,
      ...(holdId && { hold_id: holdId }),
    });
    throw error;
  }
}

/** When the first and the latest content chunks arrived (epoch ms). */
interface StreamTiming {
  firstContentAt?: number;
  lastContentAt?: number;
}

