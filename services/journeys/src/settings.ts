import { ConfigError } from '@tollgate/shared';
import { z } from 'zod';

export interface JourneySettings {
  /** How often the BullMQ job scheduler looks for idle journeys to abandon. */
  sweepIntervalMs: number;
}

const EnvSchema = z.object({
  JOURNEY_SWEEP_INTERVAL_MS: z.string().regex(/^\d+$/, 'expected a whole number').transform(Number).pipe(z.number().int().min(100).max(86_400_000)).optional(),
});

/** The journey service's own variables (the shared ones come from `loadConfig`). */
export function loadJourneySettings(env: NodeJS.ProcessEnv = process.env): JourneySettings {
  const value = env.JOURNEY_SWEEP_INTERVAL_MS?.trim();
  const parsed = EnvSchema.safeParse(value ? { JOURNEY_SWEEP_INTERVAL_MS: value } : {});
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => ({ variable: String(i.path[0]), message: i.message })));
  return { sweepIntervalMs: parsed.data.JOURNEY_SWEEP_INTERVAL_MS ?? 30_000 };
}
