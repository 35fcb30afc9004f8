import { createHash, randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { LuaScript, type Target } from '@tollgate/shared';
import { z } from 'zod';
import CLAIM_LOCK_LUA from './claim-lock-1.lua';
import RELEASE_LOCK_LUA from './release-lock-1.lua';

const cachedSchema = z.object({
  analysis: z.string(),
  /** Who answered and the model name the provider reported, which is what was billed. */
  provider: z.enum(['openai', 'gemini', 'deepseek']),
  model: z.string().min(1).max(128),
  stored_at: z.iso.datetime(),
});
export type CachedAnalysis = z.infer<typeof cachedSchema>;

export interface CacheHit extends CachedAnalysis {
  /** The target the answer was cached under. */
  target: Target;
}

// The in-flight lock: taken by its owner (or again by a re-run of its job), freed only by its owner.
const CLAIM = new LuaScript(CLAIM_LOCK_LUA);
const RELEASE = new LuaScript(RELEASE_LOCK_LUA);

/**
 * Analyses by what was asked: SHA-256 of the image bytes, the provider/model and the prompt. A
 * hit costs nothing, so identical requests within the TTL are paid for once. The in-flight lock
 * stretches that to concurrent duplicates: one pays, the others wait for its answer.
 */
export class ResultCache {
  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly ttlSeconds: number,
  ) {}

  /** Hex fingerprint of one question to one model. Newlines cannot occur in the fixed-width hash or the provider/model names, so fields never run together. */
  static fingerprint(imageSha256: string, prompt: string, target: Target): string {
    return createHash('sha256').update(`${imageSha256}\n${target.provider}/${target.model}\n${prompt}`).digest('hex');
  }

  private key(fingerprint: string): string {
    return `${this.namespace}:vision:cache:${fingerprint}`;
  }

  private lockKey(fingerprint: string): string {
    return `${this.namespace}:vision:inflight:${fingerprint}`;
  }

  /** The first of `targets` with a stored answer; an entry that no longer parses counts as a miss. */
  async find(imageSha256: string, prompt: string, targets: readonly Target[]): Promise<CacheHit | undefined> {
    if (targets.length === 0) return undefined;
    const raw = await this.redis.mget(targets.map((t) => this.key(ResultCache.fingerprint(imageSha256, prompt, t))));
    for (const [i, value] of raw.entries()) {
      const target = targets[i];
      if (value === null || !target) continue;
      const parsed = cachedSchema.safeParse(safeJson(value));
      if (parsed.success) return { ...parsed.data, target };
    }
    return undefined;
  }

  async store(imageSha256: string, prompt: string, target: Target, value: Omit<CachedAnalysis, 'stored_at'>): Promise<void> {
    const entry: CachedAnalysis = { ...value, stored_at: new Date().toISOString() };
    await this.redis.set(this.key(ResultCache.fingerprint(imageSha256, prompt, target)), JSON.stringify(entry), 'EX', this.ttlSeconds);
  }

  /**
   * Claims the right to pay for this question; undefined when another job already holds it. The
   * owner is the job id: when a worker dies holding a claim, BullMQ runs the same job again and
   * that run takes its own claim back, instead of waiting for it to expire (past its deadline).
   */
  async claim(fingerprint: string, ttlMs: number, owner: string = randomUUID()): Promise<string | undefined> {
    const ok = await CLAIM.run(this.redis, [this.lockKey(fingerprint)], [owner, String(Math.max(1, Math.ceil(ttlMs)))]);
    return ok === 1 ? owner : undefined;
  }

  async release(fingerprint: string, token: string): Promise<void> {
    await RELEASE.run(this.redis, [this.lockKey(fingerprint)], [token]);
  }

  /**
   * Waits while another job answers the same question: returns its answer once cached, or
   * undefined when it gave up (lock gone, no answer) or `until` passed, and the caller pays itself.
   */
  async awaitOther(imageSha256: string, prompt: string, targets: readonly Target[], fingerprint: string, until: number, everyMs = 50): Promise<CacheHit | undefined> {
    while (Date.now() < until) {
      const hit = await this.find(imageSha256, prompt, targets);
      if (hit) return hit;
      if ((await this.redis.exists(this.lockKey(fingerprint))) === 0) return this.find(imageSha256, prompt, targets);
      await new Promise((r) => setTimeout(r, Math.min(everyMs, Math.max(1, until - Date.now()))));
    }
    return undefined;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
