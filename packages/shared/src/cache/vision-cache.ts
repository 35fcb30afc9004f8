import { z } from 'zod';
import type { Target } from '../providers/types';
import { VISION_TARGETS, type VisionJob, type VisionQuality } from '../vision-jobs';
import { type CacheKey, cacheKey } from './cache-key';

/** A cached analysis: who answered and the model name the provider reported, which is what was billed. */
export const cachedAnalysisSchema = z.object({
  analysis: z.string(),
  provider: z.enum(['openai', 'gemini', 'deepseek']),
  model: z.string().min(1).max(128),
});
export type CachedAnalysis = z.infer<typeof cachedAnalysisSchema>;

/** The answer-shaping fields of an image question to one model, under the asking tenant. */
export function visionCacheKey(namespace: string, job: Pick<VisionJob, 'user_id' | 'project_id' | 'prompt' | 'cache'>, imageSha256: string, target: Target): CacheKey {
  return cacheKey(namespace, { project: job.project_id, user: job.user_id }, 'vision', job.cache?.partition ?? 'default', {
    image_sha256: imageSha256,
    prompt: job.prompt,
    provider: target.provider,
    model: target.model,
  });
}

/**
 * Whose cached answers meet a quality whatever the budget: any model for `standard`, only the
 * high-quality one for `high`. (The worker may accept more for a degraded request.)
 */
export function visionCacheableTargets(quality: VisionQuality): Target[] {
  return quality === 'standard' ? [VISION_TARGETS.standard, VISION_TARGETS.high] : [VISION_TARGETS.high];
}
