import { z } from 'zod';

/** The client's cache directive as a job carries it to a worker (see CacheDirective). */
export const jobCacheSchema = z.object({
  mode: z.enum(['default', 'refresh', 'bypass']),
  partition: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
  max_age_seconds: z.number().int().nonnegative().optional(),
});
export type JobCache = z.infer<typeof jobCacheSchema>;
