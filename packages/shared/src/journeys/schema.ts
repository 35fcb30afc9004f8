import { z } from 'zod';
import { isEventType } from '../events/catalog';

/**
 * Journeys: versioned templates of ordered steps, each completed by a bus event of the journey,
 * and instances of them per user. Everything here is data; the state machine that advances an
 * instance lives in services/journeys, the writes in journey-store.ts.
 */

export const TEMPLATE_KEY = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const STEP_KEY = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Journey ids the gateway accepts in `x-tollgate-journey`: checked before any key is built from one. */
export const JOURNEY_ID = /^jrn_[A-Za-z0-9_-]{8,64}$/;
export const JOURNEY_STATES = ['active', 'completed', 'abandoned', 'cancelled'] as const;
export type JourneyState = (typeof JOURNEY_STATES)[number];

const stepSchema = z.strictObject({
  key: z.string().regex(STEP_KEY, 'lower-case letters, digits, - and _'),
  title: z.string().min(1).max(200),
  required: z.boolean().default(true),
  /** Share of progress this step is worth among the required steps. */
  weight: z.number().int().min(1).max(1000).default(1),
  /** Steps that must be completed before this one can be. */
  depends_on: z.array(z.string().regex(STEP_KEY)).max(50).default([]),
  completion: z.strictObject({
    /** An event type of the catalog (not a journey.* one). */
    event: z.string().refine((t) => isEventType(t) && !t.startsWith('journey.'), 'an event type of the catalog, other than journey.*'),
    /**
     * Equalities the event must meet: a `data` field (`quality: high`, `cached: false`), or `step`,
     * the request's `x-tollgate-journey-step` tag.
     */
    match: z.record(z.string().regex(/^[a-z_][a-z0-9_]{0,63}$/), z.string().max(200)).default({}),
  }),
});

/** What an admin publishes; the store assigns the version. */
export const templateInputSchema = z
  .strictObject({
    title: z.string().min(1).max(200),
    description: z.string().max(2000).optional(),
    /** A journey with no event for this long is abandoned. */
    abandon_after_seconds: z.number().int().min(1).max(365 * 86_400).default(7 * 86_400),
    steps: z.array(stepSchema).min(1).max(50),
  })
  .superRefine((t, ctx) => {
    const seen = new Set<string>();
    t.steps.forEach((s, i) => {
      if (seen.has(s.key)) ctx.addIssue({ code: 'custom', path: ['steps', i, 'key'], message: `step "${s.key}" appears twice` });
      s.depends_on.forEach((d, j) => {
        // Only earlier steps: the order is then a valid topological order and cycles cannot exist.
        if (!seen.has(d)) ctx.addIssue({ code: 'custom', path: ['steps', i, 'depends_on', j], message: `"${d}" is not an earlier step` });
      });
      seen.add(s.key);
    });
    if (!t.steps.some((s) => s.required)) ctx.addIssue({ code: 'custom', path: ['steps'], message: 'at least one step must be required' });
  });
export type TemplateInput = z.input<typeof templateInputSchema>;

export const templateSchema = z.object({
  key: z.string().regex(TEMPLATE_KEY),
  version: z.number().int().min(1),
  title: z.string(),
  description: z.string().optional(),
  abandon_after_seconds: z.number().int(),
  steps: z.array(stepSchema),
  published_at: z.string(),
  published_by: z.string(),
});
export type JourneyTemplate = z.infer<typeof templateSchema>;
export type JourneyStepTemplate = JourneyTemplate['steps'][number];

export const journeyStepStateSchema = z.object({
  key: z.string(),
  status: z.enum(['pending', 'completed']),
  completed_at: z.string().optional(),
  time_in_step_ms: z.number().int().nonnegative().optional(),
  by_event_id: z.string().optional(),
  by_event_type: z.string().optional(),
  /** The request whose event completed the step: its untagged spend counts toward this step. */
  by_request: z.string().optional(),
});

/** One journey as stored (the `doc` field of its hash). */
export const journeyDocSchema = z.object({
  id: z.string(),
  user_id: z.string(),
  project_id: z.string(),
  template: z.string(),
  template_version: z.number().int(),
  external_id: z.string().optional(),
  state: z.enum(JOURNEY_STATES),
  started_at: z.string(),
  updated_at: z.string(),
  last_activity_at: z.string(),
  ended_at: z.string().optional(),
  steps: z.array(journeyStepStateSchema),
  /** Spend so far from cost.recorded (the journey service's running figure, for analytics). */
  cost_micros: z.number().int().nonnegative(),
});
export type JourneyDoc = z.infer<typeof journeyDocSchema>;
export type JourneyStepState = JourneyDoc['steps'][number];

/** Weighted share of the required steps that are done, 0-100 with one decimal. */
export function progressPct(template: Pick<JourneyTemplate, 'steps'>, steps: readonly JourneyStepState[]): number {
  const done = new Set(steps.filter((s) => s.status === 'completed').map((s) => s.key));
  let total = 0;
  let got = 0;
  for (const s of template.steps) {
    if (!s.required) continue;
    total += s.weight;
    if (done.has(s.key)) got += s.weight;
  }
  return total === 0 ? 0 : Math.round((got / total) * 1000) / 10;
}

/**
 * Redis keys. All under the namespace's hash tag, so the transition script's keys (and the
 * admission script's read of a journey) share one Cluster slot with the bus stream.
 */
export function journeyKeys(namespace: string) {
  const k = (...parts: string[]) => [namespace, 'journey', ...parts].join(':');
  return {
    /** Hash: `doc` (JSON), `rev`, `user`, `project`, `state`: the admission script reads the last three. */
    journey: (id: string) => k('j', id),
    /** Set of the event ids already applied to a journey: a redelivery changes nothing. */
    seen: (id: string) => k('seen', id),
    /** Sorted set of active journeys by idle deadline (ms): the abandonment sweep reads it. */
    active: () => k('active'),
    /** Sorted sets of journeys by start (ms): per user, and all. */
    byUser: (user: string) => k('idx', 'user', user),
    all: () => k('idx', 'all'),
    /** Hash: `latest` and one JSON per version; versions are immutable. */
    template: (key: string) => k('tpl', key),
    templates: () => k('tpls'),
    /** Hash of counters and time-in-step sketch bins for one template version. */
    stats: (template: string, version: number) => k('stats', template, String(version)),
    prefix: () => k(''),
  };
}
export type JourneyKeys = ReturnType<typeof journeyKeys>;
