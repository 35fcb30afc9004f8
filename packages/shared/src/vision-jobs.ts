import { z } from 'zod';
import type { Target } from './providers/types';
import { jobCacheSchema } from './cache/cache-job';
import { usageUnitsSchema } from './events/catalog';
import { attemptSchema, holdJobFields, jobErrorSchema, jobTags } from './jobs';

/** Image types the gateway accepts, named by what their bytes say, never by a client's claim. */
export const VISION_MIME_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif'] as const;
export type VisionMimeType = (typeof VISION_MIME_TYPES)[number];

export const VISION_QUALITIES = ['standard', 'high'] as const;
export type VisionQuality = (typeof VISION_QUALITIES)[number];

/** The cheapest provider that meets each quality; prices are in the shared price table. */
export const VISION_TARGETS: Record<VisionQuality, Target> = {
  standard: { provider: 'deepseek', model: 'deepseek-vl2' },
  high: { provider: 'gemini', model: 'gemini-2.0-flash' },
};

const id = z.string().min(1).max(128);

export const VISION_PROMPT_MAX_CHARS = 4_000;

/**
 * A vision job. The image itself is not in the job: base64 of an 8 MB upload would sit in every
 * retained job hash for an hour. The gateway puts the bytes under `visionImageKey` (short TTL) and
 * the job names that key.
 */
export const visionJobSchema = z.object({
  request_id: id,
  user_id: id,
  project_id: id,
  image_key: z.string().regex(/^[A-Za-z0-9-]{8,64}$/),
  mime_type: z.enum(VISION_MIME_TYPES),
  prompt: z.string().min(1).max(VISION_PROMPT_MAX_CHARS),
  quality: z.enum(VISION_QUALITIES),
  hold_id: holdJobFields.hold_id,
  /** The client's Cache-Control and cache namespace; absent: the project's defaults. */
  cache: jobCacheSchema.optional(),
  /** Epoch ms after which nobody waits for the answer. */
  deadline_at: z.number().int().positive(),
  ...jobTags,
});
export type VisionJob = z.infer<typeof visionJobSchema>;

export const visionJobResultSchema = z.discriminatedUnion('ok', [
  z.object({
    ok: z.literal(true),
    analysis: z.string(),
    provider: z.string(),
    model: z.string(),
    /** Served from the result cache: nothing was billed. */
    cached: z.boolean(),
    /** `high` was asked for but served as `standard` because the scope is close to a hard budget. */
    degraded: z.boolean(),
    image_sha256: z.string().regex(/^[a-f0-9]{64}$/),
    /** What was billed (on a hit: what would have been). */
    units: usageUnitsSchema,
    /** On a cache hit, what the call would have cost; the ledger prices the hit at zero. */
    avoided_micros: z.number().int().nonnegative().optional(),
    attempts: z.array(attemptSchema),
    fallback_used: z.boolean(),
  }),
  z.object({ ok: z.literal(false), error: jobErrorSchema, attempts: z.array(attemptSchema) }),
]);
export type VisionJobResult = z.infer<typeof visionJobResultSchema>;

/** Where the gateway parks a job's image bytes until the worker has read them. */
export function visionImageKey(namespace: string, imageKey: string): string {
  return `${namespace}:vision:upload:${imageKey}`;
}
