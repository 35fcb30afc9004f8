import { type Target, VISION_TARGETS, type VisionQuality } from '@tollgate/shared';

/**
 * Says whether a scope is close to a hard budget, so expensive work should step down. The service
 * wires the shared budget check; tests that are not about budgets use `neverNearBudget`.
 */
export type NearHardBudget = (userId: string, projectId: string) => Promise<boolean>;
export const neverNearBudget: NearHardBudget = async () => false;

// Shared: the gateway holds the dearest of them on hard budgets before a vision job is queued.
export { VISION_TARGETS } from '@tollgate/shared';

export interface VisionRoute {
  /** The quality actually served: `standard` when a `high` request was degraded. */
  served: VisionQuality;
  degraded: boolean;
  /** Primary first, then the fallback: the other provider takes over when the first cannot answer. */
  chain: Target[];
  /**
   * Whose cached answers are good enough, best first: any for `standard`, only the high-quality
   * model for `high`, so a fallback answer cached earlier never stands in for what `high` pays
   * for. A degraded request still prefers a cached high-quality answer: it costs nothing either.
   */
  cacheable: Target[];
}

export function routeVision(requested: VisionQuality, nearBudget: boolean): VisionRoute {
  const degraded = requested === 'high' && nearBudget;
  const served: VisionQuality = degraded ? 'standard' : requested;
  const primary = VISION_TARGETS[served];
  const fallback = VISION_TARGETS[served === 'standard' ? 'high' : 'standard'];
  const chain = [primary, fallback];
  const cacheable = degraded ? [VISION_TARGETS.high, VISION_TARGETS.standard] : served === 'standard' ? chain : [primary];
  return { served, degraded, chain, cacheable };
}

/** Whether an answer from `target` is of the quality asked for. */
export function meetsQuality(target: Target, quality: VisionQuality): boolean {
  const high = VISION_TARGETS.high;
  return quality === 'standard' || (target.provider === high.provider && target.model === high.model);
}
