import {
  type AnyEvent,
  type EventEnvelope,
  firstOpenRequired,
  type JourneyDoc,
  type JourneyStepTemplate,
  type JourneyStore,
  type JourneyTemplate,
  matchesPattern,
  progressPct,
  timeInStepField,
} from '@tollgate/shared';

export type AdvanceOutcome = 'applied' | 'seen' | 'no_step' | 'not_active' | 'unknown_journey' | 'ignored';

/** Versions are immutable once published: each is read from Redis once per process. */
export class TemplateCache {
  private readonly cache = new Map<string, Promise<JourneyTemplate | null>>();
  constructor(private readonly store: JourneyStore) {}

  get(key: string, version: number): Promise<JourneyTemplate | null> {
    const id = `${key}@${version}`;
    let t = this.cache.get(id);
    if (!t) {
      t = this.store.template(key, version);
      this.cache.set(id, t);
      void t.then((v) => v ?? this.cache.delete(id)).catch(() => this.cache.delete(id));
    }
    return t;
  }
}

function matches(step: JourneyStepTemplate, event: AnyEvent): boolean {
  if (!matchesPattern(step.completion.event, event.type)) return false;
  const data = event.data as Record<string, unknown>;
  for (const [field, want] of Object.entries(step.completion.match)) {
    const have = field === 'step' ? event.journey_step : data[field];
    if (have === undefined || have === null || String(have) !== want) return false;
  }
  return true;
}

/**
 * The step an event completes: the first pending step, in template order, whose dependencies are
 * done and whose completion the event matches. An event tagged with a step (x-tollgate-journey-step)
 * can complete only that step.
 */
export function stepFor(template: JourneyTemplate, doc: JourneyDoc, event: AnyEvent): JourneyStepTemplate | undefined {
  const state = new Map(doc.steps.map((s) => [s.key, s]));
  return template.steps.find(
    (s) =>
      state.get(s.key)?.status !== 'completed' &&
      (event.journey_step === undefined || event.journey_step === s.key) &&
      s.depends_on.every((d) => state.get(d)?.status === 'completed') &&
      matches(s, event),
  );
}

const CAS_ROUNDS = 20;

/**
 * Applies one bus event to its journey: a completed step (and the journey's completion when every
 * required step is done), or spend from cost.recorded. Each is one compare-and-set of the journey
 * with its events, refused if the event id was applied before, so a redelivery changes nothing;
 * a lost race re-reads and decides again.
 */
export async function advance(store: JourneyStore, templates: TemplateCache, event: AnyEvent, now = Date.now()): Promise<AdvanceOutcome> {
  const id = event.journey_id;
  if (id === undefined || event.type.startsWith('journey.')) return 'ignored';
  for (let round = 0; round < CAS_ROUNDS; round++) {
    // Seen first: a replayed event must not complete a later step it also matches.
    const cur = await store.getForEvent(id, event.id);
    if (!cur) return 'unknown_journey';
    if (cur.seen) return 'seen';
    const doc = cur.doc;
    const template = await templates.get(doc.template, doc.template_version);
    if (!template) return 'unknown_journey';

    let outcome;
    if (event.type === 'cost.recorded') {
      const amount = event.data.amount_micros;
      const next: JourneyDoc = { ...doc, cost_micros: doc.cost_micros + amount };
      outcome = await store.apply(cur, next, {
        eventId: event.id,
        idleUntil: 'keep',
        stats: [['cost', amount], ...(doc.state === 'completed' ? ([['cost_completed', amount]] as Array<[string, number]>) : [])],
      });
    } else {
      if (doc.state !== 'active') return 'not_active';
      const idleUntil = now + template.abandon_after_seconds * 1000;
      const step = stepFor(template, doc, event);
      if (!step) {
        // Still activity: it keeps the journey from being abandoned.
        await store.touch(id, idleUntil);
        return 'no_step';
      }
      const at = event.occurred_at;
      const completedMs = Date.parse(at);
      const openedMs = Math.max(Date.parse(doc.started_at), ...step.depends_on.map((d) => Date.parse(doc.steps.find((s) => s.key === d)?.completed_at ?? doc.started_at)));
      const timeInStep = Math.max(0, completedMs - openedMs);
      const steps = doc.steps.map((s) =>
        s.key === step.key
          ? { ...s, status: 'completed' as const, completed_at: at, time_in_step_ms: timeInStep, by_event_id: event.id, by_event_type: event.type, by_request: event.correlation_id }
          : s,
      );
      const next: JourneyDoc = { ...doc, steps, updated_at: new Date(now).toISOString(), last_activity_at: at };
      const progress = progressPct(template, steps);
      const done = firstOpenRequired(template, next) === undefined;
      const meta = { correlation_id: event.correlation_id, occurred_at: at, ...(event.journey_step !== undefined && { journey_step: event.journey_step }) };
      const events: EventEnvelope[] = [
        store.event(next, 'journey.step_completed', { ...store.journeyData(next), step: step.key, by_event_id: event.id, by_event_type: event.type, time_in_step_ms: timeInStep, progress_pct: progress }, { ...meta, id: `${id}:step:${step.key}` }),
      ];
      const stats: Array<[string, number]> = [[`done:${step.key}`, 1], [timeInStepField(step.key, timeInStep), 1]];
      if (done) {
        next.state = 'completed';
        next.ended_at = at;
        events.push(store.event(next, 'journey.completed', { ...store.journeyData(next), duration_ms: Math.max(0, completedMs - Date.parse(doc.started_at)), progress_pct: progress }, { ...meta, id: `${id}:completed` }));
        stats.push(['completed', 1], ['cost_completed', doc.cost_micros]);
      }
      outcome = await store.apply(cur, next, { eventId: event.id, idleUntil: done ? null : idleUntil, stats, events });
    }
    if (outcome === 'ok') return 'applied';
    if (outcome === 'seen') return 'seen';
    // 'conflict': another instance changed it since the read; decide again on the new state,
    // after a random pause so instances racing on one journey do not keep colliding.
    await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 5 * 2 ** round)));
  }
  throw new Error(`journey ${id}: no compare-and-set succeeded in ${CAS_ROUNDS} rounds`);
}

/**
 * Abandons the active journeys whose idle deadline has passed, each by a compare-and-set that
 * also checks the deadline did not move meanwhile (an event may have just arrived).
 */
export async function abandonIdle(store: JourneyStore, templates: TemplateCache, now = Date.now()): Promise<number> {
  let abandoned = 0;
  for (const { id, due } of await store.idleJourneys(now)) {
    for (let round = 0; round < CAS_ROUNDS; round++) {
      const cur = await store.get(id);
      if (!cur) break;
      const doc = cur.doc;
      const template = await templates.get(doc.template, doc.template_version);
      const at = new Date(now).toISOString();
      const next: JourneyDoc = { ...doc, state: 'abandoned', ended_at: at, updated_at: at };
      const open = firstOpenRequired(template, doc);
      const windowMs = (template?.abandon_after_seconds ?? 0) * 1000;
      const events = [
        store.event(
          next,
          'journey.abandoned',
          { ...store.journeyData(next), idle_ms: Math.max(0, now - (due - windowMs)), ...(open && { at_step: open }), progress_pct: template ? progressPct(template, doc.steps) : 0 },
          { correlation_id: id, occurred_at: at, id: `${id}:abandoned` },
        ),
      ];
      // A journey left in the sweep by mistake (already ended) just leaves it.
      const ended = doc.state !== 'active';
      const outcome = await store.apply(cur, ended ? doc : next, {
        idleUntil: null,
        idleBefore: now,
        ...(ended ? {} : { stats: [['abandoned', 1], ...(open ? ([[`dropped:${open}`, 1]] as Array<[string, number]>) : [])], events }),
      });
      if (outcome === 'ok' && !ended) abandoned++;
      if (outcome !== 'conflict') break;
    }
  }
  return abandoned;
}
