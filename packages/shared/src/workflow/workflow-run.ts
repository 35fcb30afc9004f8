import type { EventBus } from '../bus/event-bus';
import { type Classification, classify } from '../errors/classify';
import type { EVENT_CACHE_STATUSES, EventData, EventType, Resolution } from '../events/catalog';
import type { EventEnvelope, EventMeta } from '../events/envelope';
import type { JobError } from '../jobs';
import { RecoveryFailedError } from '../providers/recovery';

export type WorkflowKind = 'chat' | 'vision';
/** One event of a run, without its envelope: the run stamps correlation, user and project. */
export type RunEvent = { [T in EventType]: { type: T; data: EventData<T> } }[EventType];
export type WorkflowState = 'created' | 'running' | 'completed' | 'failed';
/** What became of an error: tried again, another provider took over, answered safely, or the run failed. */
export type ErrorHandling = 'retried' | 'fell_back' | 'degraded' | 'failed';

export interface ErrorRecord {
  at: string;
  provider?: string;
  model?: string;
  handled: ErrorHandling;
  resolution: Resolution;
}

export interface WorkflowContext {
  bus: EventBus;
  workflow: WorkflowKind;
  /** Emitting service, stamped on `error.occurred`. */
  service: string;
  correlationId: string;
  userId?: string;
  projectId?: string;
  jobId?: string;
  /** Request dimensions for analytics, stamped on started/completed/failed. */
  tags?: RunTags;
  /** The request's `x-tollgate-journey-step` tag; the journey itself is `tags.journey`. Both go on every event's envelope. */
  journeyStep?: string;
  /** When the gateway enqueued the request (epoch ms): latency and time to first token count from here. */
  enqueuedAt?: number;
}

export interface RunTags {
  route?: string;
  streamed?: boolean;
  cache?: (typeof EVENT_CACHE_STATUSES)[number];
  flag_variant?: string;
  journey?: string;
}

/** What a completed run adds to `workflow.completed` besides provider and model. */
export type CompletionFacts = Pick<
  EventData<'workflow.completed'>,
  'provider' | 'model' | 'ttft_ms' | 'generation_ms' | 'attempts' | 'fallback_used' | 'input_tokens' | 'output_tokens' | 'cache'
>;
export type FailureFacts = Pick<EventData<'workflow.failed'>, 'attempts' | 'fallback_used' | 'provider' | 'model'>;

/** The error that decides the outcome: recovery wraps the last provider error with its attempts. */
export function rootError(error: unknown): unknown {
  return error instanceof RecoveryFailedError ? error.last : error;
}

export function toResolution(c: Classification): Resolution {
  return {
    category: c.category,
    strategy: c.strategy,
    code: c.code,
    message: c.userMessage,
    suggested_actions: c.suggestedActions,
    retryable: c.retryable,
  };
}

/**
 * The base every workflow runs on: its state, every error it met with how it was resolved, and
 * the lifecycle events, all under the request's correlation id.
 */
export class WorkflowRun {
  private current: WorkflowState = 'created';
  private readonly errors: ErrorRecord[] = [];
  private readonly startedAt = Date.now();
  private billed = 0;

  constructor(private readonly ctx: WorkflowContext) {}

  get state(): WorkflowState {
    return this.current;
  }

  get elapsedMs(): number {
    return Date.now() - this.startedAt;
  }

  /** Since the gateway enqueued the request (or since the run started when that is unknown); never negative under clock skew. */
  sinceEnqueuedMs(at = Date.now()): number {
    return Math.max(0, at - (this.ctx.enqueuedAt ?? this.startedAt));
  }

  private tags(): RunTags {
    return this.ctx.tags ?? {};
  }

  meta(): EventMeta {
    return {
      correlation_id: this.ctx.correlationId,
      ...(this.ctx.userId !== undefined && { user_id: this.ctx.userId }),
      ...(this.ctx.projectId !== undefined && { project_id: this.ctx.projectId }),
      ...(this.ctx.tags?.journey !== undefined && { journey_id: this.ctx.tags.journey }),
      ...(this.ctx.journeyStep !== undefined && { journey_step: this.ctx.journeyStep }),
    };
  }

  /**
   * Usage events this run has sent (counted before the write, so a write whose fate is unknown
   * counts): the budget hold waits for the ledger to settle this many before giving back the rest.
   */
  get billedCalls(): number {
    return this.billed;
  }

  publish<T extends EventType>(type: T, data: EventData<T>): Promise<EventEnvelope<T>> {
    if (type === 'usage.recorded') this.billed++;
    return this.ctx.bus.publish(type, data, this.meta());
  }

  /** Publishes several events of the run, in order, in one round trip. */
  async publishAll(events: readonly RunEvent[]): Promise<void> {
    const meta = this.meta();
    for (const e of events) if (e.type === 'usage.recorded') this.billed++;
    await this.ctx.bus.publishMany(events.map((e) => ({ ...e, meta }) as Parameters<EventBus['publishMany']>[0][number]));
  }

  /** Marks the run started; `then` are published right after `workflow.started`, in the same round trip. */
  async start(...then: RunEvent[]): Promise<void> {
    this.current = 'running';
    await this.publishAll([
      { type: 'workflow.started', data: { workflow: this.ctx.workflow, ...(this.ctx.jobId && { job_id: this.ctx.jobId }), ...this.tags() } },
      ...then,
    ]);
  }

  /** Records an error and how it was handled, and reports it on the bus for error rates. */
  async recordError(error: unknown, handled: ErrorHandling, target?: { provider: string; model: string; operation?: string }): Promise<ErrorRecord> {
    const c = classify(rootError(error));
    const record: ErrorRecord = {
      at: new Date().toISOString(),
      handled,
      resolution: toResolution(c),
      ...(target && { provider: target.provider, model: target.model }),
    };
    this.errors.push(record);
    await this.publish('error.occurred', {
      service: this.ctx.service,
      category: c.category,
      strategy: c.strategy,
      code: c.code,
      message: c.userMessage,
      ...(target && { provider: target.provider, operation: target.operation ?? this.ctx.workflow }),
    });
    return record;
  }

  /** The most recent error's resolution: what the caller is told when asking "what went wrong". */
  lastResolution(): ErrorRecord | undefined {
    return this.errors[this.errors.length - 1];
  }

  errorLog(): readonly ErrorRecord[] {
    return this.errors;
  }

  /** Completes the run; `before` are published ahead of `workflow.completed`, in the same round trip. */
  async complete(result: CompletionFacts = {}, ...before: RunEvent[]): Promise<void> {
    this.current = 'completed';
    await this.publishAll([
      ...before,
      {
        type: 'workflow.completed',
        data: {
          workflow: this.ctx.workflow,
          duration_ms: this.elapsedMs,
          latency_ms: this.sinceEnqueuedMs(),
          ...(this.ctx.jobId && { job_id: this.ctx.jobId }),
          ...this.tags(),
          ...definedOnly(result),
        },
      },
    ]);
  }

  /** Fails the run and returns the failure as the client sees it (job results carry no error objects). */
  async failure(error: unknown, facts: FailureFacts = {}): Promise<JobError> {
    const record = await this.fail(error, facts);
    const c = classify(rootError(error));
    return {
      code: record.resolution.code,
      category: record.resolution.category,
      message: record.resolution.message,
      suggested_actions: record.resolution.suggested_actions,
      http_status: c.httpStatus,
      ...(c.retryAfterMs !== undefined && { retry_after_ms: c.retryAfterMs }),
    };
  }

  async fail(error: unknown, facts: FailureFacts = {}): Promise<ErrorRecord> {
    const record = await this.recordError(error, 'failed');
    this.current = 'failed';
    await this.publish('workflow.failed', {
      workflow: this.ctx.workflow,
      duration_ms: this.elapsedMs,
      latency_ms: this.sinceEnqueuedMs(),
      ...(this.ctx.jobId && { job_id: this.ctx.jobId }),
      ...this.tags(),
      ...definedOnly(facts),
      error: record.resolution,
    });
    return record;
  }
}

function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
