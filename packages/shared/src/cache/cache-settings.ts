import type Redis from 'ioredis';
import { z } from 'zod';
import type { CacheKind } from './cache-key';

/**
 * Per-project cache policy an operator sets: the default TTL of each kind (0 = off unless the
 * request asks with max-age) and a cap no request's max-age can exceed.
 */
export const cacheSettingsSchema = z.strictObject({
  chat_ttl_seconds: z.number().int().min(0).max(30 * 86_400),
  rag_ttl_seconds: z.number().int().min(0).max(30 * 86_400),
  vision_ttl_seconds: z.number().int().min(0).max(30 * 86_400),
  max_ttl_seconds: z.number().int().min(0).max(30 * 86_400),
});
export type CacheSettings = z.infer<typeof cacheSettingsSchema>;

/** RAG context 5 min, vision 1 h, chat answers off unless asked for; at most a day. */
export const DEFAULT_CACHE_SETTINGS: CacheSettings = { chat_ttl_seconds: 0, rag_ttl_seconds: 300, vision_ttl_seconds: 3600, max_ttl_seconds: 86_400 };

export function settingsKey(namespace: string, project: string): string {
  return `${namespace}:cache:settings:${encodeURIComponent(project)}`;
}

/** The TTL a new entry of `kind` gets: the request's max-age, else the project's default, never past the cap. */
export function ttlFor(kind: CacheKind, settings: CacheSettings, maxAgeSeconds: number | undefined): number {
  const ttl = maxAgeSeconds ?? settings[`${kind}_ttl_seconds`];
  return Math.max(0, Math.min(ttl, settings.max_ttl_seconds));
}

/**
 * Settings per project, read through a short in-process memo: the request path pays no round
 * trip for them, and an operator's change is in force everywhere within `memoMs`.
 */
export class CacheSettingsStore {
  private readonly memo = new Map<string, { at: number; settings: CacheSettings }>();

  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly defaults: CacheSettings = DEFAULT_CACHE_SETTINGS,
    private readonly memoMs = 2_000,
  ) {}

  async get(project: string): Promise<CacheSettings> {
    const hit = this.memo.get(project);
    if (hit && Date.now() - hit.at < this.memoMs) return hit.settings;
    const raw = await this.redis.get(settingsKey(this.namespace, project));
    const parsed = raw ? cacheSettingsSchema.partial().safeParse(safeJson(raw)) : undefined;
    const settings = { ...this.defaults, ...(parsed?.success ? parsed.data : {}) };
    if (this.memo.size > 10_000) this.memo.clear();
    this.memo.set(project, { at: Date.now(), settings });
    return settings;
  }

  /** Merges `patch` into the project's settings; returns the result. */
  async set(project: string, patch: Partial<CacheSettings>): Promise<CacheSettings> {
    const current = await this.redis.get(settingsKey(this.namespace, project));
    const stored = current ? cacheSettingsSchema.partial().safeParse(safeJson(current)) : undefined;
    const next = cacheSettingsSchema.partial().parse({ ...(stored?.success ? stored.data : {}), ...patch });
    await this.redis.set(settingsKey(this.namespace, project), JSON.stringify(next));
    this.memo.delete(project);
    return { ...this.defaults, ...next };
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
