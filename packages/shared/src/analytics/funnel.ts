import type Redis from 'ioredis';
import { matchesPattern } from '../bus/patterns';
import { tenantShardsFrom } from '../config';
import { pipelinePerShard, shardsFor, tenantShardNamespaces } from '../tenant-shards';
import { queryError } from './reader';
import { type AnalyticsKeys, analyticsKeys, bucketStart, GRAIN_MS } from './schema';

/**
 * Funnels over any ordered event steps. The analytics service keeps, per user and UTC day, a
 * timeline of the events it is configured to follow (`timelineMember`); a funnel reads the
 * timelines of the users in scope and walks them. Journeys (issue 18) use the same machinery
 * with their `journey.*` events as steps.
 */

/** Data fields a step may be narrowed by (`where`); kept on each timeline entry. */
export const TIMELINE_ATTRS = [
  'workflow', 'provider', 'model', 'route', 'reason', 'cache', 'operation', 'journey', 'journey_id', 'template', 'step', 'state', 'flag', 'flag_key', 'variant',
] as const;

const SEP = '\x1f';

export interface TimelineEntry {
  t: number;
  type: string;
  /** The request (correlation id): funnels by request pair a request's own events. */
  corr: string;
  project: string;
  attrs: Record<string, string>;
}

export function timelineMember(e: TimelineEntry): string {
  const attrs = Object.keys(e.attrs).length > 0 ? JSON.stringify(e.attrs) : '';
  return [e.t, e.type, e.corr, e.project, attrs].join(SEP);
}

export function parseTimelineMember(m: string): TimelineEntry | null {
  const [t, type, corr, project, attrs] = m.split(SEP);
  if (!t || !type) return null;
  try {
    return { t: Number(t), type, corr: corr ?? '', project: project ?? '', attrs: attrs ? (JSON.parse(attrs) as Record<string, string>) : {} };
  } catch {
    return null;
  }
}

/** The attributes of an event's data a step can match on, as strings. */
export function timelineAttrs(data: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of TIMELINE_ATTRS) {
    const v = data[k];
    if (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') out[k] = String(v).slice(0, 128);
  }
  return out;
}

export interface FunnelStep {
  /** An event type or pattern (`journey.*`). */
  event: string;
  where?: Record<string, string>;
}

export interface FunnelQuery {
  steps: readonly FunnelStep[];
  /** From a subject's first step to its last, at most this long. */
  window_ms: number;
  /** First steps counted in [from, to); later steps may follow up to the window after `to`. */
  from: number;
  to: number;
  /** Whose steps are followed: a user across requests, or each request on its own. */
  by: 'user' | 'request';
  users?: readonly string[];
  projects?: readonly string[];
}

export interface FunnelStepResult {
  event: string;
  where?: Record<string, string>;
  /** Subjects that reached this step (in order, inside the window). */
  count: number;
  /** Of those that reached the previous step (1 for the first). */
  conversion_from_previous: number | null;
  conversion_from_first: number | null;
  /** Reached the previous step but not this one. */
  drop_off: number;
  /** Median time from the previous step to this one, over subjects that reached it. */
  median_ms_from_previous: number | null;
}

export interface FunnelResult {
  from: string;
  to: string;
  window_ms: number;
  by: 'user' | 'request';
  subjects: number;
  steps: FunnelStepResult[];
}

const matches = (step: FunnelStep, e: TimelineEntry) =>
  matchesPattern(step.event, e.type) && Object.entries(step.where ?? {}).every(([k, v]) => e.attrs[k] === v);

/**
 * Walks each subject's events in time order: the first event matching step 1 inside [from, to)
 * starts it, then each next step is the first matching event after the previous step and within
 * the window of the start. Pure: tests give it timelines directly.
 */
export function computeFunnel(subjects: Iterable<TimelineEntry[]>, q: Pick<FunnelQuery, 'steps' | 'window_ms' | 'from' | 'to' | 'by'>): Omit<FunnelResult, 'from' | 'to' | 'window_ms' | 'by'> & { steps: FunnelStepResult[] } {
  const reached = q.steps.map(() => 0);
  const gaps: number[][] = q.steps.map(() => []);
  let total = 0;
  for (const events of subjects) {
    events.sort((a, b) => a.t - b.t);
    const startAt = events.findIndex((e) => e.t >= q.from && e.t < q.to && matches(q.steps[0]!, e));
    if (startAt < 0) continue;
    total++;
    const t0 = events[startAt]!.t;
    reached[0]!++;
    let prev = startAt;
    for (let s = 1; s < q.steps.length; s++) {
      let found = -1;
      for (let i = prev + 1; i < events.length && events[i]!.t - t0 <= q.window_ms; i++) {
        if (matches(q.steps[s]!, events[i]!)) {
          found = i;
          break;
        }
      }
      if (found < 0) break;
      reached[s]!++;
      gaps[s]!.push(events[found]!.t - events[prev]!.t);
      prev = found;
    }
  }
  return {
    subjects: total,
    steps: q.steps.map((step, i) => ({
      event: step.event,
      ...(step.where && { where: step.where }),
      count: reached[i]!,
      conversion_from_previous: i === 0 ? (total > 0 ? 1 : null) : ratio(reached[i]!, reached[i - 1]!),
      conversion_from_first: ratio(reached[i]!, reached[0]!),
      drop_off: i === 0 ? 0 : reached[i - 1]! - reached[i]!,
      median_ms_from_previous: i === 0 ? null : median(gaps[i]!),
    })),
  };
}

const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 10_000) / 10_000 : null);

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Timelines are kept this long (days from their UTC day). */
export const TIMELINE_RETENTION_DAYS = 31;
/** Funnels read at most this many users' timelines; a wider one is refused with a hint to filter. */
export const MAX_FUNNEL_USERS = 20_000;
const MAX_FUNNEL_DAYS = 32;

export class FunnelReader {
  private readonly shards: ReadonlyArray<AnalyticsKeys>;
  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly now: () => number = Date.now,
    shards = tenantShardsFrom(),
  ) {
    this.shards = tenantShardNamespaces(namespace, shards).map(analyticsKeys);
  }

  async run(q: FunnelQuery): Promise<FunnelResult> {
    if (q.to <= q.from) throw queryError('to', '"to" must be after "from".');
    const oldest = bucketStart(this.now(), 'day') - (TIMELINE_RETENTION_DAYS - 1) * GRAIN_MS.day;
    if (q.from < oldest) throw queryError('from', `Funnel timelines are kept ${TIMELINE_RETENTION_DAYS} days; "from" is older.`);
    const first = bucketStart(q.from, 'day');
    const last = bucketStart(Math.min(q.to + q.window_ms, this.now()), 'day');
    const days: number[] = [];
    for (let d = first; d <= last; d += GRAIN_MS.day) days.push(d);
    if (days.length > MAX_FUNNEL_DAYS) throw queryError('to', `A funnel spans at most ${MAX_FUNNEL_DAYS} days including its window.`);

    const users = q.users && new Set(q.users);
    const projects = q.projects && new Set(q.projects);
    // A subject's timeline is in its project's shard: each shard's subjects name what to read there.
    const shards = shardsFor(q.projects, this.shards);
    const members = (
      await pipelinePerShard(this.redis, shards, (pipe, shard) => {
        for (const d of days) pipe.smembers(shard.subjects(d));
      })
    ).flat() as string[][];
    const wanted = new Set<string>();
    // Which (shard, day, user) timelines to read: a user's set member names the project it was seen in.
    const reads: Array<[AnalyticsKeys, number, string]> = [];
    const seenRead = new Set<string>();
    members.forEach((list, i) => {
      const s = Math.floor(i / days.length);
      const day = days[i % days.length]!;
      for (const m of list) {
        const [user = '', project = ''] = m.split(SEP);
        if (users && !users.has(user)) continue;
        if (projects && !projects.has(project)) continue;
        wanted.add(user);
        const k = `${s}|${day}|${user}`;
        if (!seenRead.has(k)) {
          seenRead.add(k);
          reads.push([shards[s]!, day, user]);
        }
      }
    });
    if (wanted.size > MAX_FUNNEL_USERS) {
      throw queryError('filters', `The funnel would read ${wanted.size} users' timelines; at most ${MAX_FUNNEL_USERS}. Filter by project or user, or narrow from/to.`);
    }

    const bySubject = new Map<string, TimelineEntry[]>();
    const byShard = new Map<AnalyticsKeys, Array<[number, string]>>();
    for (const [shard, d, u] of reads) {
      let list = byShard.get(shard);
      if (!list) byShard.set(shard, (list = []));
      list.push([d, u]);
    }
    for (const [shard, wantedHere] of byShard) {
      for (let i = 0; i < wantedHere.length; i += 1_000) {
        const chunk = wantedHere.slice(i, i + 1_000);
        const p = this.redis.pipeline();
        for (const [d, u] of chunk) p.lrange(shard.timeline(d, u), 0, -1);
        const res = (await p.exec()) ?? [];
        res.forEach(([err, v], j) => {
          if (err) throw err;
          const user = chunk[j]![1];
          for (const raw of v as string[]) {
            const e = parseTimelineMember(raw);
            if (!e) continue;
            if (projects && !projects.has(e.project)) continue;
            const subject = q.by === 'request' ? `${user}${SEP}${e.corr}` : user;
            let entries = bySubject.get(subject);
            if (!entries) bySubject.set(subject, (entries = []));
            entries.push(e);
          }
        });
      }
    }
    const result = computeFunnel(bySubject.values(), q);
    return { from: new Date(q.from).toISOString(), to: new Date(q.to).toISOString(), window_ms: q.window_ms, by: q.by, ...result };
  }
}
