import { randomBytes } from 'node:crypto';
import type Redis from 'ioredis';
import { busStreamKey } from '../bus/event-bus';
import { TollgateError } from '../errors/tollgate-error';
import { type EventData, type EventType } from '../events/catalog';
import { createEvent, type EventEnvelope, schemaTag } from '../events/envelope';
import { type LedgerEntry, ledgerEntrySchema } from '../ledger/ledger-entry';
import { ledgerKeysOf } from '../ledger/ledger-keys';
import { tenantShardsFrom } from '../config';
import { LuaScript } from '../lua';
import { money, type Money } from '../ledger/ledger-reader';
import { sketchBin, sketchFromBins } from '../analytics/schema';
import {
  type JourneyDoc,
  journeyDocSchema,
  journeyKeys,
  type JourneyKeys,
  type JourneyState,
  type JourneyTemplate,
  type TemplateInput,
  templateInputSchema,
  templateSchema,
  TEMPLATE_KEY,
  progressPct,
} from './schema';
import APPLY_JOURNEY from './apply-journey-7.lua';
import PUBLISH_TEMPLATE from './publish-template-2.lua';

const APPLY = new LuaScript(APPLY_JOURNEY);
const PUBLISH = new LuaScript(PUBLISH_TEMPLATE);
/** How long a journey remembers the event ids it applied (longer than any bus redelivery or replay window). */
const SEEN_TTL_MS = 31 * 86_400_000;

export class JourneyError extends TollgateError {}

export interface StoredJourney {
  doc: JourneyDoc;
  rev: string;
}

export type ApplyOutcome = 'ok' | 'conflict' | 'seen' | 'busy';

export interface Transition {
  /** The event that caused it: applied at most once per journey. */
  eventId?: string;
  /** New idle deadline (ms), `null` to leave the sweep (a final state), `'keep'` for no change. */
  idleUntil: number | null | 'keep';
  /** Only if the journey is still idle at this time (the abandonment sweep's condition). */
  idleBefore?: number;
  stats?: Array<[string, number]>;
  events?: EventEnvelope[];
}

export interface StepView {
  key: string;
  title: string;
  required: boolean;
  weight: number;
  depends_on: string[];
  status: 'pending' | 'completed';
  completed_at?: string;
  time_in_step_ms?: number;
  cost: Money;
  entries: number;
}

export interface JourneyView {
  id: string;
  user_id: string;
  project_id: string;
  template: string;
  template_version: number;
  external_id?: string;
  state: JourneyState;
  started_at: string;
  updated_at: string;
  last_activity_at: string;
  ended_at?: string;
  progress_pct: number;
  steps: StepView[];
  cost: { total: Money; entries: number; unassigned: Money };
}

export interface StepStats {
  key: string;
  title: string;
  required: boolean;
  /** Journeys that could start this step: those that completed its dependencies (all started ones when it has none). */
  reached: number;
  completed: number;
  conversion: number | null;
  /** Reached but not completed (still active ones included). */
  drop_off: number;
  drop_off_rate: number | null;
  /** Journeys abandoned or cancelled with this as their first open required step. */
  abandoned_here: number;
  time_in_step_p50_ms: number | null;
  time_in_step_p90_ms: number | null;
}

export interface TemplateStats {
  template: string;
  version: number;
  started: number;
  completed: number;
  abandoned: number;
  cancelled: number;
  active: number;
  completion_rate: number | null;
  cost_completed: Money;
  cost_per_completed: Money | null;
  steps: StepStats[];
}

/** How many of the newest journeys a state-filtered list looks through at most. */
export const LIST_SCAN_MAX = 5_000;

const newJourneyId = () => `jrn_${randomBytes(12).toString('base64url')}`;

/**
 * Templates and journeys in Redis. Every change of a journey goes through `apply`: one script that
 * compares the revision it was computed from, writes the new document and appends its events.
 * Used by the gateway (start, cancel, reads), the journey service (advance, abandon) and the CLI.
 */
export class JourneyStore {
  readonly keys: JourneyKeys;
  private readonly stream: string;
  /** TENANT_SHARDS, resolved once: a journey's entries are in its project's shard. */
  private readonly tenantShards: number;

  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
    /** Stamped as `source` on the events this store publishes. */
    private readonly source: string,
  ) {
    this.keys = journeyKeys(namespace);
    this.stream = busStreamKey(namespace);
    this.tenantShards = tenantShardsFrom();
  }

  // ---- templates ----

  async publishTemplate(key: string, input: TemplateInput, by: string, now?: Date): Promise<JourneyTemplate>;
  async publishTemplate(key: string, input: TemplateInput, by: string, now: Date | undefined, onlyIfAbsent: true): Promise<JourneyTemplate | null>;
  async publishTemplate(key: string, input: TemplateInput, by: string, now = new Date(), onlyIfAbsent = false): Promise<JourneyTemplate | null> {
    if (!TEMPLATE_KEY.test(key)) throw new JourneyError('invalid_request', 'A template key is lower-case letters, digits and -, up to 63 characters.');
    const parsed = templateInputSchema.parse(input);
    // Without its version: the script numbers it and writes it in front (no text replacement, so
    // nothing an admin writes in a title or a match can be mistaken for it).
    const draft = { key, ...parsed, published_at: now.toISOString(), published_by: by };
    const version = Number(await PUBLISH.run(this.redis, [this.keys.template(key), this.keys.templates()], [key, JSON.stringify(draft), onlyIfAbsent ? '1' : '']));
    return version === 0 ? null : templateSchema.parse({ ...draft, version });
  }

  /** One version (default: the latest). */
  async template(key: string, version?: number): Promise<JourneyTemplate | null> {
    const v = version ?? Number(await this.redis.hget(this.keys.template(key), 'latest'));
    if (!v) return null;
    const raw = await this.redis.hget(this.keys.template(key), String(v));
    return raw ? templateSchema.parse(JSON.parse(raw)) : null;
  }

  async templateVersions(key: string): Promise<JourneyTemplate[]> {
    const all = await this.redis.hgetall(this.keys.template(key));
    return Object.entries(all)
      .filter(([f]) => f !== 'latest')
      .map(([, raw]) => templateSchema.parse(JSON.parse(raw)))
      .sort((a, b) => a.version - b.version);
  }

  /** The latest version of every template. */
  async templates(): Promise<JourneyTemplate[]> {
    const keys = (await this.redis.smembers(this.keys.templates())).sort();
    const out = await Promise.all(keys.map((k) => this.template(k)));
    return out.filter((t): t is JourneyTemplate => t !== null);
  }

  /** Publishes `input` as version 1 unless the template exists (start-up seeding: an admin's versions are never overwritten). */
  async seedTemplate(key: string, input: TemplateInput, by: string, now = new Date()): Promise<JourneyTemplate | null> {
    return this.publishTemplate(key, input, by, now, true);
  }

  // ---- journeys ----

  async get(id: string): Promise<StoredJourney | null> {
    const [doc, rev] = await this.redis.hmget(this.keys.journey(id), 'doc', 'rev');
    if (!doc || !rev) return null;
    return { doc: journeyDocSchema.parse(JSON.parse(doc)), rev };
  }

  /** The journey, and whether `eventId` was applied to it already, in one round trip. */
  async getForEvent(id: string, eventId: string): Promise<(StoredJourney & { seen: boolean }) | null> {
    const res = await this.redis.multi().hmget(this.keys.journey(id), 'doc', 'rev').sismember(this.keys.seen(id), eventId).exec();
    const [[, fields], [, seen]] = res as [[unknown, Array<string | null>], [unknown, number]];
    const [doc, rev] = fields;
    if (!doc || !rev) return null;
    return { doc: journeyDocSchema.parse(JSON.parse(doc)), rev, seen: seen === 1 };
  }

  /** Newest first; `user` limits to one owner. */
  async list(q: { user?: string; state?: JourneyState; limit?: number }): Promise<JourneyDoc[]> {
    const limit = Math.min(q.limit ?? 100, 1000);
    const index = q.user !== undefined ? this.keys.byUser(q.user) : this.keys.all();
    const out: JourneyDoc[] = [];
    // Filtering by state reads in pages until the page is full or the index ends, but never more
    // than the newest LIST_SCAN_MAX journeys: one request's work stays bounded however many a
    // user has finished.
    for (let start = 0; out.length < limit && start < LIST_SCAN_MAX; start += 500) {
      const ids = await this.redis.zrevrange(index, start, start + 499);
      if (ids.length === 0) break;
      const docs = await Promise.all(ids.map((id) => this.redis.hget(this.keys.journey(id), 'doc')));
      for (const raw of docs) {
        if (!raw) continue;
        const doc = journeyDocSchema.parse(JSON.parse(raw));
        if (q.state === undefined || doc.state === q.state) out.push(doc);
        if (out.length >= limit) break;
      }
      if (ids.length < 500) break;
    }
    return out;
  }

  /** Starts a journey on the template's latest version (or `version`); publishes journey.started. */
  async start(owner: { user_id: string; project_id: string }, templateKey: string, opts: { external_id?: string; version?: number; correlation_id: string; now?: Date }): Promise<{ doc: JourneyDoc; template: JourneyTemplate }> {
    const template = await this.template(templateKey, opts.version);
    if (!template) throw new JourneyError('not_found', `No journey template "${templateKey}"${opts.version ? ` version ${opts.version}` : ''}.`);
    const now = opts.now ?? new Date();
    const at = now.toISOString();
    const doc: JourneyDoc = {
      id: newJourneyId(),
      user_id: owner.user_id,
      project_id: owner.project_id,
      template: template.key,
      template_version: template.version,
      ...(opts.external_id !== undefined && { external_id: opts.external_id }),
      state: 'active',
      started_at: at,
      updated_at: at,
      last_activity_at: at,
      steps: template.steps.map((s) => ({ key: s.key, status: 'pending' as const })),
      cost_micros: 0,
    };
    const event = this.event(doc, 'journey.started', this.journeyData(doc), { correlation_id: opts.correlation_id, occurred_at: at, id: `${doc.id}:started` });
    const outcome = await this.apply(null, doc, {
      idleUntil: now.getTime() + template.abandon_after_seconds * 1000,
      stats: [['started', 1]],
      events: [event],
    });
    if (outcome !== 'ok') throw new JourneyError('conflict', 'The journey could not be created; try again.');
    return { doc, template };
  }

  /** The fields every journey.* event carries. */
  journeyData(doc: JourneyDoc): EventData<'journey.started'> {
    return { journey: doc.id, template: doc.template, template_version: doc.template_version, ...(doc.external_id !== undefined && { external_id: doc.external_id }) };
  }

  /** A journey.* event of `doc`, validated now, appended by `apply`. */
  event<T extends EventType>(doc: JourneyDoc, type: T, data: EventData<T>, meta: { correlation_id: string; occurred_at?: string; id: string; journey_step?: string }): EventEnvelope<T> {
    return createEvent(type, data, { ...meta, user_id: doc.user_id, project_id: doc.project_id, journey_id: doc.id }, this.source);
  }

  /** The compare-and-set: `next` replaces `prev` only if nobody changed it since (and the event was not applied yet). */
  async apply(prev: StoredJourney | null, next: JourneyDoc, t: Transition): Promise<ApplyOutcome> {
    const rev = prev ? String(Number(prev.rev) + 1) : '1';
    const stats = t.stats ?? [];
    const events = t.events ?? [];
    const reply = (await APPLY.run(
      this.redis,
      [
        this.keys.journey(next.id),
        this.keys.seen(next.id),
        this.keys.active(),
        this.keys.stats(next.template, next.template_version),
        this.stream,
        this.keys.byUser(next.user_id),
        this.keys.all(),
      ],
      [
        prev ? prev.rev : '',
        t.eventId ?? '',
        JSON.stringify(next),
        rev,
        next.state,
        next.id,
        t.idleUntil === null ? '' : t.idleUntil === 'keep' ? '-' : String(t.idleUntil),
        prev ? '' : String(Date.parse(next.started_at)),
        t.idleBefore === undefined ? '' : String(t.idleBefore),
        SEEN_TTL_MS,
        next.user_id,
        next.project_id,
        stats.length,
        ...stats.flatMap(([f, n]) => [f, String(n)]),
        events.length,
        ...events.flatMap((e) => [e.type, schemaTag(e.type), JSON.stringify(e)]),
      ],
    )) as string[];
    return reply[0] as ApplyOutcome;
  }

  /** Ends an active journey at its owner's (or an admin's) request. */
  async cancel(id: string, correlationId: string, now = new Date()): Promise<JourneyDoc> {
    for (let round = 0; round < 20; round++) {
      const cur = await this.get(id);
      if (!cur) throw new JourneyError('not_found', `No journey "${id}".`);
      if (cur.doc.state !== 'active') throw new JourneyError('conflict', `The journey is already ${cur.doc.state}.`);
      const template = await this.template(cur.doc.template, cur.doc.template_version);
      const at = now.toISOString();
      const next: JourneyDoc = { ...cur.doc, state: 'cancelled', ended_at: at, updated_at: at };
      const open = firstOpenRequired(template, next);
      const event = this.event(next, 'journey.cancelled', { ...this.journeyData(next), ...(open && { at_step: open }), progress_pct: template ? progressPct(template, next.steps) : 0 }, { correlation_id: correlationId, occurred_at: at, id: `${id}:cancelled` });
      const outcome = await this.apply(cur, next, { idleUntil: null, stats: [['cancelled', 1], ...(open ? ([[`dropped:${open}`, 1]] as Array<[string, number]>) : [])], events: [event] });
      if (outcome === 'ok') return next;
    }
    throw new JourneyError('conflict', 'The journey kept changing; try again.');
  }

  /** Active journeys whose idle deadline (ms) is at or before `now`, oldest first. */
  async idleJourneys(now: number, limit = 500): Promise<Array<{ id: string; due: number }>> {
    const flat = await this.redis.zrangebyscore(this.keys.active(), '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit);
    const out: Array<{ id: string; due: number }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i]!, due: Number(flat[i + 1]) });
    return out;
  }

  /** Pushes an active journey's idle deadline out (any event of it is activity); never shortens it. */
  async touch(id: string, idleUntil: number): Promise<void> {
    await this.redis.zadd(this.keys.active(), 'XX', 'GT', String(idleUntil), id);
  }

  /** The ledger entries of a journey's requests, oldest first (in its project's tenant shard). */
  async entries(doc: Pick<JourneyDoc, 'id' | 'project_id'>): Promise<LedgerEntry[]> {
    const ledger = ledgerKeysOf(this.namespace, doc.project_id, this.tenantShards);
    const members = await this.redis.zrange(ledger.index({ journey: doc.id }), '0', '-1');
    if (members.length === 0) return [];
    const out: LedgerEntry[] = [];
    for (let i = 0; i < members.length; i += 500) {
      const keys = members.slice(i, i + 500).map((m) => ledger.entry(m.slice(m.indexOf(':') + 1)));
      for (const raw of await this.redis.mget(...keys)) if (raw) out.push(ledgerEntrySchema.parse(JSON.parse(raw)));
    }
    return out;
  }

  /**
   * The journey as the API shows it: steps with status, times and cost, progress, and cost so far.
   * Cost is summed from the ledger entries of its requests: an entry counts toward the step its
   * request was tagged with, else the step its request completed, else it is unassigned.
   */
  async view(doc: JourneyDoc): Promise<JourneyView> {
    const [template, entries] = await Promise.all([this.template(doc.template, doc.template_version), this.entries(doc)]);
    if (!template) throw new JourneyError('not_found', `The journey's template ${doc.template} v${doc.template_version} is gone.`);
    const byRequest = new Map(doc.steps.filter((s) => s.by_request).map((s) => [s.by_request!, s.key]));
    const known = new Set(template.steps.map((s) => s.key));
    const cost = new Map<string, { micros: number; n: number }>();
    let total = 0;
    for (const e of entries) {
      total += e.amount_micros;
      const tagged = e.journey_step !== undefined && known.has(e.journey_step) ? e.journey_step : undefined;
      const step = tagged ?? byRequest.get(e.request_id) ?? byRequest.get(e.correlation_id) ?? '';
      const c = cost.get(step) ?? { micros: 0, n: 0 };
      c.micros += e.amount_micros;
      c.n += 1;
      cost.set(step, c);
    }
    const state = new Map(doc.steps.map((s) => [s.key, s]));
    return {
      id: doc.id,
      user_id: doc.user_id,
      project_id: doc.project_id,
      template: doc.template,
      template_version: doc.template_version,
      ...(doc.external_id !== undefined && { external_id: doc.external_id }),
      state: doc.state,
      started_at: doc.started_at,
      updated_at: doc.updated_at,
      last_activity_at: doc.last_activity_at,
      ...(doc.ended_at !== undefined && { ended_at: doc.ended_at }),
      progress_pct: progressPct(template, doc.steps),
      steps: template.steps.map((t) => {
        const s = state.get(t.key);
        const c = cost.get(t.key) ?? { micros: 0, n: 0 };
        return {
          key: t.key,
          title: t.title,
          required: t.required,
          weight: t.weight,
          depends_on: t.depends_on,
          status: s?.status ?? 'pending',
          ...(s?.completed_at !== undefined && { completed_at: s.completed_at }),
          ...(s?.time_in_step_ms !== undefined && { time_in_step_ms: s.time_in_step_ms }),
          cost: money(c.micros),
          entries: c.n,
        };
      }),
      cost: { total: money(total), entries: entries.length, unassigned: money(cost.get('')?.micros ?? 0) },
    };
  }

  /** Analytics of one template version (default: latest), from the counters the transitions keep. */
  async stats(templateKey: string, version?: number): Promise<TemplateStats> {
    const template = await this.template(templateKey, version);
    if (!template) throw new JourneyError('not_found', `No journey template "${templateKey}"${version ? ` version ${version}` : ''}.`);
    const raw = await this.redis.hgetall(this.keys.stats(template.key, template.version));
    const n = (f: string) => Number(raw[f] ?? 0);
    const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 10_000) / 10_000 : null);
    const started = n('started');
    const completed = n('completed');
    const abandoned = n('abandoned');
    const cancelled = n('cancelled');
    const costCompleted = n('cost_completed');
    const done = new Map(template.steps.map((s) => [s.key, n(`done:${s.key}`)]));
    return {
      template: template.key,
      version: template.version,
      started,
      completed,
      abandoned,
      cancelled,
      active: Math.max(0, started - completed - abandoned - cancelled),
      completion_rate: ratio(completed, started),
      cost_completed: money(costCompleted),
      cost_per_completed: completed > 0 ? money(Math.round(costCompleted / completed)) : null,
      steps: template.steps.map((s) => {
        const reached = s.depends_on.length === 0 ? started : Math.min(...s.depends_on.map((d) => done.get(d) ?? 0));
        const got = done.get(s.key) ?? 0;
        const bins = new Map<string, number>();
        const prefix = `t:${s.key}:`;
        for (const [f, v] of Object.entries(raw)) if (f.startsWith(prefix)) bins.set(f.slice(prefix.length), Number(v));
        const sketch = sketchFromBins(bins);
        const q = (p: number) => (sketch.count > 0 ? Math.round(sketch.getValueAtQuantile(p)) : null);
        return {
          key: s.key,
          title: s.title,
          required: s.required,
          reached,
          completed: got,
          conversion: ratio(got, reached),
          drop_off: Math.max(0, reached - got),
          drop_off_rate: ratio(Math.max(0, reached - got), reached),
          abandoned_here: n(`dropped:${s.key}`),
          time_in_step_p50_ms: q(0.5),
          time_in_step_p90_ms: q(0.9),
        };
      }),
    };
  }
}

/** The stats field a time in step adds to (a DDSketch bin, as the analytics rollups keep them). */
export function timeInStepField(step: string, ms: number): string {
  return `t:${step}:${sketchBin(ms)}`;
}

/** The first required step not completed yet, in template order. */
export function firstOpenRequired(template: JourneyTemplate | null, doc: JourneyDoc): string | undefined {
  if (!template) return undefined;
  const done = new Set(doc.steps.filter((s) => s.status === 'completed').map((s) => s.key));
  return template.steps.find((s) => s.required && !done.has(s.key))?.key;
}
