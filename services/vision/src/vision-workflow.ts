import { createHash } from 'node:crypto';
import type Redis from 'ioredis';
import {
  finishHold,
  type AttemptRecord,
  type CachedAnalysis,
  cachedAnalysisSchema,
  type CacheKey,
  type CacheSettingsStore,
  type Cached,
  type ResponseCache,
  ttlFor,
  type BackoffOptions,
  type BreakerRegistry,
  DeadlineExceededError,
  type EventBus,
  type EventData,
  type FlagReader,
  price,
  type PriceTable,
  type ProviderClient,
  type ProviderName,
  type RecoveryDecision,
  RecoveryFailedError,
  requestFlagContext,
  type Target,
  type UsageUnits,
  type VisionJob,
  type VisionJobResult,
  visionCacheKey,
  visionHighKilled,
  visionImageKey,
  withRecovery,
  WorkflowRun,
} from '@tollgate/shared';
import { meetsQuality, type NearHardBudget, routeVision } from './routing';

export const SERVICE = 'vision';
const OPERATION = 'vision';
/** Vision is billed per image (the product's cost table), whatever tokens the provider also counts. */
const IMAGE_UNITS: UsageUnits = { images: 1 };

export interface VisionLogger {
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

export interface VisionDeps {
  bus: EventBus;
  redis: Redis;
  namespace: string;
  clients: Record<ProviderName, ProviderClient>;
  breakers: BreakerRegistry;
  /** The shared caching service; vision entries are keyed per tenant by image digest, prompt and model. */
  cache: ResponseCache;
  /** Per-project TTLs (vision defaults to 1 h) and the cap. */
  cacheSettings: CacheSettingsStore;
  /** Prices what a cache hit saved. */
  priceTable: PriceTable;
  nearHardBudget: NearHardBudget;
  callTimeoutMs: number;
  maxAttempts: number;
  backoff?: BackoffOptions;
  logger?: VisionLogger;
  /** The service's flag snapshot: the `high` quality kill switch. Absent: never killed. */
  flags?: FlagReader;
}

/** Milestones reported as job progress, so a dashboard can tell a queued job from a slow provider. */
export const VISION_STEPS = { started: 5, image_loaded: 20, cache_checked: 40, analyzing: 50, completed: 100 } as const;
export type VisionStep = keyof typeof VISION_STEPS;
export type ReportProgress = (step: VisionStep) => Promise<void>;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

type CacheHit = Cached<CachedAnalysis> & { target: Target };
const cachedSchema = cachedAnalysisSchema;
export { visionCacheKey };

/**
 * One image question: the cheapest provider that meets the requested quality, unless the same
 * question was answered within the cache TTL. Never throws for a provider or input failure; the
 * result says what went wrong in the client's terms.
 */
export async function runVisionWorkflow(job: VisionJob, jobId: string, deps: VisionDeps, progress: ReportProgress = async () => {}): Promise<VisionJobResult> {
  const run = new WorkflowRun({
    bus: deps.bus,
    workflow: 'vision',
    service: SERVICE,
    correlationId: job.request_id,
    userId: job.user_id,
    projectId: job.project_id,
    jobId,
    tags: {
      streamed: false,
      ...(job.route && { route: job.route }),
      ...(job.journey && { journey: job.journey }),
      ...(job.flag_variant && { flag_variant: job.flag_variant }),
    },
    ...(job.journey_step && { journeyStep: job.journey_step }),
    ...(job.enqueued_at && { enqueuedAt: job.enqueued_at }),
  });
  const attempts: AttemptRecord[] = [];
  const recorded: Array<Promise<unknown>> = [];
  let lock: { key: CacheKey; token: string } | undefined;
  let ttl = 0;

  try {
    await run.start();
    await progress('started');
    // A job picked up after its caller gave up is not worth paying for.
    const remaining = () => job.deadline_at - Date.now();
    if (remaining() <= 0) throw new DeadlineExceededError('The request deadline passed before the analysis started');
    const image = await deps.redis.getBuffer(visionImageKey(deps.namespace, job.image_key));
    // The upload only expires after the deadline, so a missing one means the caller is gone.
    if (!image) throw new DeadlineExceededError('The uploaded image expired before the analysis started');
    // Hashed here, from the bytes actually analysed, so a cache entry can never describe another image.
    const imageSha256 = sha256(image);
    await progress('image_loaded');

    // The kill switch serves `high` as `standard`, marked degraded, exactly as a budget step-down does.
    const killed = job.quality === 'high' && deps.flags !== undefined && visionHighKilled(deps.flags, requestFlagContext(job));
    const route = routeVision(job.quality, job.quality === 'high' && (killed || (await isNearBudget(deps, job))));
    const mode = job.cache?.mode ?? 'default';
    const settings = await deps.cacheSettings.get(job.project_id);
    ttl = mode === 'bypass' ? 0 : ttlFor('vision', settings, job.cache?.max_age_seconds);
    const keys = route.cacheable.map((t) => visionCacheKey(deps.namespace, job, imageSha256, t));
    let hit: CacheHit | undefined;
    if (mode === 'default' && ttl > 0) {
      const found = await deps.cache.first(keys, cachedSchema, job.cache?.max_age_seconds);
      if (found) hit = { ...found, target: route.cacheable[found.index]! };
      if (!hit) {
        const own = visionCacheKey(deps.namespace, job, imageSha256, route.chain[0]!);
        const token = await deps.cache.claim(own, remaining(), `job:${jobId}`);
        if (token) lock = { key: own, token };
        else {
          const other = await deps.cache.awaitOther(own, cachedSchema, job.deadline_at);
          if (other) hit = { ...other, target: route.chain[0]! };
        }
      }
    }
    await progress('cache_checked');

    if (hit) {
      // A degraded request that finds a high-quality answer cached got what it asked for.
      const degraded = route.degraded && !meetsQuality(hit.target, job.quality);
      const avoided = avoidedMicros(hit, deps.priceTable);
      const { provider, model, analysis } = hit.value;
      await deps.cache.record(keys[0]!, 'HIT', avoided ?? 0).catch(() => undefined);
      await finish(run, job, { provider, model, cached: true, imageSha256, degraded, attempts: [], fallbackUsed: false }, {
        provider,
        model,
        service: SERVICE,
        operation: OPERATION,
        units: IMAGE_UNITS,
        usage_source: 'cache',
        request_id: job.request_id,
        cached: true,
        ...(job.hold_id && { hold_id: job.hold_id }),
        ...(avoided !== undefined && { avoided_micros: avoided }),
      });
      await progress('completed');
      return {
        ok: true,
        analysis,
        provider,
        model,
        cached: true,
        degraded,
        image_sha256: imageSha256,
        units: IMAGE_UNITS,
        ...(avoided !== undefined && { avoided_micros: avoided }),
        attempts: [],
        fallback_used: false,
      };
    }

    await progress('analyzing');
    const deadlineMs = remaining();
    if (deadlineMs <= 0) throw new DeadlineExceededError('The request deadline passed while waiting for an identical analysis');
    const outcome = await withRecovery(
      route.chain,
      (t, signal) =>
        deps.clients[t.provider].complete({
          model: t.model,
          messages: [{ role: 'user', content: job.prompt }],
          image: { data: image, mimeType: job.mime_type },
          signal,
        }),
      {
        // Errors recovery absorbed are recorded with how; the one that ends the run goes to run.fail.
        onError: (err: unknown, _c: unknown, t: Target, decision: RecoveryDecision) => {
          if (decision === 'fail') return;
          recorded.push(run.recordError(err, decision === 'retry' ? 'retried' : 'fell_back', { ...t, operation: OPERATION }).catch(() => undefined));
        },
        breakers: deps.breakers,
        operation: OPERATION,
        deadlineMs,
        callTimeoutMs: deps.callTimeoutMs,
        maxAttempts: deps.maxAttempts,
        backoff: deps.backoff,
      },
    );
    attempts.push(...outcome.attempts);
    await Promise.all(recorded);
    const result = outcome.value;

    // The call is billed: its usage goes out with the end of the run, before anything else can fail.
    await finish(run, job, { provider: result.provider, model: result.model, cached: false, imageSha256, degraded: route.degraded, attempts: outcome.attempts, fallbackUsed: outcome.fallbackUsed }, {
      provider: result.provider,
      model: result.model,
      service: SERVICE,
      operation: OPERATION,
      units: IMAGE_UNITS,
      usage_source: 'provider',
      request_id: job.request_id,
      cached: false,
      ...(job.hold_id && { hold_id: job.hold_id }),
    });
    // An empty answer is paid for but not worth repeating for an hour.
    if (result.text && ttl > 0) {
      try {
        const stored: CachedAnalysis = { analysis: result.text, provider: result.provider, model: result.model };
        await deps.cache.put(visionCacheKey(deps.namespace, job, imageSha256, outcome.target), stored, ttl);
        await deps.cache.record(keys[0]!, mode === 'refresh' ? 'REFRESH' : 'MISS');
      } catch (err) {
        // The analysis is paid for and in hand; losing the cache entry only costs a future call.
        deps.logger?.warn('vision cache write failed', { error: (err as Error).message, request_id: job.request_id });
      }
    }
    await progress('completed');
    return {
      ok: true,
      analysis: result.text,
      provider: result.provider,
      model: result.model,
      cached: false,
      degraded: route.degraded,
      image_sha256: imageSha256,
      units: IMAGE_UNITS,
      attempts: outcome.attempts,
      fallback_used: outcome.fallbackUsed,
    };
  } catch (error) {
    if (error instanceof RecoveryFailedError) attempts.push(...error.attempts);
    await Promise.all(recorded);
    const last = attempts[attempts.length - 1];
    return {
      ok: false,
      attempts,
      error: await run.failure(error, {
        attempts: attempts.length,
        fallback_used: new Set(attempts.map((a) => `${a.provider}/${a.model}`)).size > 1,
        ...(last && { provider: last.provider, model: last.model }),
      }),
    };
  } finally {
    if (lock) await deps.cache.release(lock.key, lock.token).catch(() => undefined);
    // A hold that cannot be ended here expires with its deadline: held a little longer, never lost.
    if (job.hold_id) await finishHold(deps.redis, deps.namespace, job.hold_id, run.billedCalls).catch(() => undefined);
  }
}

/** Ends a served run: its usage, the analysis event and `workflow.completed`, in one round trip. */
async function finish(
  run: WorkflowRun,
  job: VisionJob,
  r: { provider: string; model: string; cached: boolean; imageSha256: string; degraded: boolean; attempts: AttemptRecord[]; fallbackUsed: boolean },
  usage: EventData<'usage.recorded'>,
): Promise<void> {
  const served = r.attempts.find((a) => a.outcome === 'ok');
  await run.complete(
    {
      provider: r.provider,
      model: r.model,
      // A cache hit made no provider call; its absence of attempts is what analytics counts.
      ...(r.attempts.length > 0 && { attempts: r.attempts.length }),
      fallback_used: r.fallbackUsed,
      cache: r.cached ? 'hit' : 'miss',
      ...(served && { generation_ms: Math.max(0, Math.round(served.durationMs)) }),
    },
    { type: 'usage.recorded', data: usage },
    {
      type: 'vision.analysis_completed',
      data: {
        provider: r.provider,
        model: r.model,
        cached: r.cached,
        latency_ms: run.elapsedMs,
        image_sha256: r.imageSha256,
        // What the client asked for; `degraded` says whether it was served as standard.
        quality: job.quality,
        degraded: r.degraded,
      },
    },
  );
}

/**
 * The budget hook only picks a cheaper model; refusing work is the gateway's budget guard. So a
 * hook that fails must not fail the request: it counts as "not near".
 */
async function isNearBudget(deps: VisionDeps, job: VisionJob): Promise<boolean> {
  try {
    return await deps.nearHardBudget(job.user_id, job.project_id);
  } catch (err) {
    deps.logger?.warn('nearHardBudget check failed; serving the requested quality', { error: (err as Error).message, request_id: job.request_id });
    return false;
  }
}

/** What the hit would have cost: the billed model's price, else the target's (a reported model name the table lacks). */
function avoidedMicros(hit: CacheHit, table: PriceTable): number | undefined {
  for (const model of [hit.value.model, hit.target.model]) {
    try {
      return price({ provider: hit.value.provider, model, units: IMAGE_UNITS }, { table }).amount_micros;
    } catch {
      // Try the next name.
    }
  }
  return undefined;
}
