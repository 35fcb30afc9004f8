import type Redis from 'ioredis';
import { z } from 'zod';
import { tenantShardsFrom } from '../config';
import { pipelinePerShard, shardsFor, tenantShardNamespaces } from '../tenant-shards';
import { Accumulator, type Metric, type MetricValue } from './metrics';
import {
  type AnalyticsKeys,
  analyticsKeys,
  bucketStart,
  decodeSeries,
  type Dimension,
  type Grain,
  GRAIN_MS,
  GRAIN_RETENTION_MS,
  METRIC_SEP,
  type Series,
} from './schema';

export const GRANULARITIES = ['minute', 'hour', 'day', 'week', 'month', 'auto'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

export interface AnalyticsQuery {
  metrics: readonly Metric[];
  group_by: readonly Dimension[];
  /** Each dimension's allowed values; a dimension absent here is not filtered. */
  filters: Partial<Record<Dimension, readonly string[]>>;
  from: number;
  to: number;
  granularity: Granularity;
  /** Groups per page (by requests, then key); `cursor` is the next page's offset. */
  limit: number;
  cursor?: number;
  /** Per-bucket points as well as totals (default true). */
  series?: boolean;
}

export interface QueryGroup {
  key: Partial<Record<Dimension, string | null>>;
  totals: Partial<Record<Metric, MetricValue>>;
  series: Array<{ t: string } & Partial<Record<Metric, MetricValue>>>;
}

export interface QueryResult {
  granularity: Exclude<Granularity, 'auto'>;
  /** The range actually covered: `from` down and `to` up to whole buckets. */
  from: string;
  to: string;
  buckets: string[];
  groups: QueryGroup[];
  total_groups: number;
  next_cursor: string | null;
}

/** Bucket reads one query may make: a week of hours, a day of minutes (with the edges), two years of days. */
export const MAX_BUCKETS = 1_600;

/** A query Redis should not be asked: it says which field is at fault, as zod issues do. */
export function queryError(field: string, message: string): z.ZodError {
  return new z.ZodError([{ code: 'custom', path: field.split('.'), message, input: undefined }]);
}

/** Which stored grain serves a granularity, and how its buckets are labelled. */
function plan(q: AnalyticsQuery, now: number): { grain: Grain; shown: Exclude<Granularity, 'auto'> } {
  const span = q.to - q.from;
  const covers = (g: Grain) => bucketStart(q.from, g) >= bucketStart(now, g) - GRAIN_RETENTION_MS[g] + GRAIN_MS[g];
  if (q.granularity === 'auto') {
    if (span <= 6 * GRAIN_MS.hour && covers('minute')) return { grain: 'minute', shown: 'minute' };
    if (span <= 8 * GRAIN_MS.day && covers('hour')) return { grain: 'hour', shown: 'hour' };
    return { grain: 'day', shown: span > 400 * GRAIN_MS.day ? 'month' : span > 60 * GRAIN_MS.day ? 'week' : 'day' };
  }
  const shown = q.granularity;
  const grain: Grain = shown === 'week' || shown === 'month' ? 'day' : shown;
  if (!covers(grain)) {
    const kept = { minute: '48 hours', hour: '90 days', day: '2 years' }[grain];
    throw queryError('granularity', `${grain} data is kept ${kept}; "from" is older. Use a coarser granularity or "auto".`);
  }
  return { grain, shown };
}

/** The label bucket of a stored bucket: itself, or its ISO week (Monday) or month. */
function labelOf(start: number, shown: Exclude<Granularity, 'auto'>): number {
  if (shown === 'week') {
    const day = new Date(start).getUTCDay();
    return start - ((day + 6) % 7) * GRAIN_MS.day;
  }
  if (shown === 'month') {
    const d = new Date(start);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  }
  return start;
}

/**
 * Reads rollups back: the query API and the overview. Every read is bounded: at most MAX_BUCKETS
 * buckets, fetched in one pipeline, each the size of one bucket's series, from each tenant shard
 * the query can touch (only its projects' shards when it filters by project).
 */
export class AnalyticsReader {
  private readonly shards: ReadonlyArray<AnalyticsKeys>;
  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly now: () => number = Date.now,
    shards = tenantShardsFrom(),
  ) {
    this.shards = tenantShardNamespaces(namespace, shards).map(analyticsKeys);
  }

  async query(q: AnalyticsQuery): Promise<QueryResult> {
    const fetched = await this.fetch(q);
    return group(fetched, q);
  }

  /** Several groupings of one range from one read (the overview). */
  async queryMany(base: Omit<AnalyticsQuery, 'group_by' | 'metrics'>, views: ReadonlyArray<Pick<AnalyticsQuery, 'group_by' | 'metrics'>>): Promise<QueryResult[]> {
    const fetched = await this.fetch({ ...base, group_by: [], metrics: [] });
    return views.map((v) => group(fetched, { ...base, ...v }));
  }

  private async fetch(q: AnalyticsQuery): Promise<Fetched> {
    if (q.to <= q.from) throw queryError('to', '"to" must be after "from".');
    const now = this.now();
    const { grain, shown } = plan(q, now);
    const first = bucketStart(q.from, grain);
    const last = bucketStart(Math.max(q.from, Math.min(q.to - 1, now)), grain);
    const n = Math.floor((last - first) / GRAIN_MS[grain]) + 1;
    if (n > MAX_BUCKETS) {
      throw queryError('from', `The range needs ${n} ${grain} buckets; at most ${MAX_BUCKETS} are read per query. Narrow from/to or use a coarser granularity.`);
    }
    const starts = Array.from({ length: n }, (_, i) => first + i * GRAIN_MS[grain]);
    return { grain, shown, first, last, starts, hashes: await this.read(grain, starts, shardsFor(q.filters.project, this.shards)) };
  }

  /**
   * The headline numbers of the current UTC period (hour, day, ISO week or month) so far, with
   * figures per model and conversion per workflow, from one read of its buckets.
   */
  async overview(period: OverviewPeriod, filters: AnalyticsQuery['filters'] = {}): Promise<Overview> {
    const t = this.now();
    const from = periodStart(period, t);
    // The period's own bucket when there is one (every grain is written as events arrive, so
    // today's day bucket holds all of today): one hash for an hour or a day, a week's or month's days.
    const base = { filters, from, to: t + 1, granularity: period === 'hour' ? 'hour' : 'day', limit: 50, series: false } as const;
    const [total, byModel, byOperation] = await this.queryMany(base, [
      { group_by: [], metrics: HEADLINE },
      { group_by: ['provider', 'model'], metrics: MODEL_METRICS },
      { group_by: ['operation'], metrics: ['started', 'completed', 'conversion_rate'] },
    ]);
    return {
      period,
      from: new Date(from).toISOString(),
      to: new Date(t).toISOString(),
      totals: total!.groups[0]?.totals ?? emptyTotals(HEADLINE),
      by_model: byModel!.groups.filter((g) => g.key.model !== null).map((g) => ({ provider: g.key.provider ?? null, model: g.key.model!, ...g.totals })),
      conversion: byOperation!.groups.filter((g) => g.key.operation !== null).map((g) => ({ workflow: g.key.operation!, ...g.totals })),
    };
  }

  /** Raw sums of one bucket over every shard (tests and the rollup check): field -> value. */
  async bucket(grain: Grain, start: number): Promise<Record<string, number>> {
    const sums: Record<string, number> = {};
    for (const hash of (await this.read(grain, [bucketStart(start, grain)], this.shards))[0] ?? []) {
      for (const field in hash) sums[field] = (sums[field] ?? 0) + Number(hash[field]);
    }
    return sums;
  }

  /** Per start, the bucket's hash in each of the shards given. */
  private async read(grain: Grain, starts: number[], shards: ReadonlyArray<AnalyticsKeys>): Promise<Array<Array<Record<string, string>>>> {
    if (starts.length === 0) return [];
    const perShard = await pipelinePerShard(this.redis, shards, (pipe, shard) => {
      for (const s of starts) pipe.hgetall(shard.bucket(grain, s));
    });
    return starts.map((_, i) => perShard.map((hashes) => (hashes[i] ?? {}) as Record<string, string>));
  }
}

export const OVERVIEW_PERIODS = ['hour', 'day', 'week', 'month'] as const;
export type OverviewPeriod = (typeof OVERVIEW_PERIODS)[number];

export interface Overview {
  period: OverviewPeriod;
  from: string;
  to: string;
  totals: Partial<Record<Metric, MetricValue>>;
  by_model: Array<{ provider: string | null; model: string } & Partial<Record<Metric, MetricValue>>>;
  conversion: Array<{ workflow: string } & Partial<Record<Metric, MetricValue>>>;
}

export const HEADLINE: Metric[] = [
  'requests', 'completed', 'failed', 'refused_budget', 'rate_limited', 'error_rate', 'errors_by_category', 'fallbacks', 'fallback_rate',
  'latency_p50', 'latency_p75', 'latency_p90', 'latency_p95', 'latency_p99', 'ttft_p50', 'ttft_p95', 'ttft_p99', 'output_tokens_per_s',
  'tokens_in', 'tokens_out', 'cost_micros', 'avoided_micros', 'cost_per_success_micros', 'breaker_opens', 'conversion_rate',
];
const MODEL_METRICS: Metric[] = [
  'completed', 'failed', 'error_rate', 'latency_p50', 'latency_p95', 'ttft_p50', 'output_tokens_per_s', 'cost_micros', 'avoided_micros', 'cost_per_success_micros', 'tokens_in', 'tokens_out',
];

/** Start of the UTC hour, day, ISO week (Monday) or month holding `t`. */
export function periodStart(period: OverviewPeriod, t: number): number {
  if (period === 'hour') return bucketStart(t, 'hour');
  if (period === 'day') return bucketStart(t, 'day');
  if (period === 'week') return labelOf(bucketStart(t, 'day'), 'week');
  return labelOf(t, 'month');
}

function emptyTotals(metrics: readonly Metric[]): Partial<Record<Metric, MetricValue>> {
  return new Accumulator().compute(metrics);
}

interface Fetched {
  grain: Grain;
  shown: Exclude<Granularity, 'auto'>;
  first: number;
  last: number;
  starts: number[];
  /** Per start, its hash in each shard read. */
  hashes: Array<Array<Record<string, string>>>;
}

function group({ grain, shown, first, last, starts, hashes }: Fetched, q: AnalyticsQuery): QueryResult {
  const filter = compileFilter(q.filters);
  const groupOf = new Map<string, string | null>();
  const keyOf = (seriesText: string): string | null => {
    let k = groupOf.get(seriesText);
    if (k === undefined) {
      const s = decodeSeries(seriesText);
      k = filter(s) ? JSON.stringify(q.group_by.map((d) => s[d] ?? null)) : null;
      groupOf.set(seriesText, k);
    }
    return k;
  };

  const labels = [...new Set(starts.map((s) => labelOf(s, shown)))];
  const withSeries = q.series !== false;
  const byGroup = new Map<string, { total: Accumulator; at: Map<number, Accumulator> }>();
  hashes.forEach((perShard, i) => {
    // Without series every bucket adds into one accumulator per group.
    const label = withSeries ? labelOf(starts[i]!, shown) : 0;
    for (const hash of perShard) {
      for (const field in hash) {
        const cut = field.indexOf(METRIC_SEP);
        if (cut < 0) continue;
        const g = keyOf(field.slice(0, cut));
        if (g === null) continue;
        let entry = byGroup.get(g);
        if (!entry) byGroup.set(g, (entry = { total: new Accumulator(), at: new Map() }));
        let acc = entry.at.get(label);
        if (!acc) entry.at.set(label, (acc = new Accumulator()));
        acc.add(field.slice(cut + 1), Number(hash[field]));
      }
    }
  });

  const ranked = [...byGroup.entries()].map(([k, e]) => {
    for (const acc of e.at.values()) e.total.merge(acc);
    return { k, e };
  });
  // Busiest first (then costliest), ties by key, so pages are stable.
  ranked.sort((a, b) => b.e.total.get('req') - a.e.total.get('req') || b.e.total.get('cost') - a.e.total.get('cost') || (a.k < b.k ? -1 : 1));
  const offset = q.cursor ?? 0;
  const page = ranked.slice(offset, offset + q.limit);
  const empty = new Accumulator();
  return {
    granularity: shown,
    from: new Date(labels[0] ?? first).toISOString(),
    to: new Date(last + GRAIN_MS[grain]).toISOString(),
    buckets: labels.map((t) => new Date(t).toISOString()),
    groups: page.map(({ k, e }) => {
      const values = JSON.parse(k) as Array<string | null>;
      return {
        key: Object.fromEntries(q.group_by.map((d, i) => [d, values[i] ?? null])),
        totals: e.total.compute(q.metrics),
        series: withSeries ? labels.map((t) => ({ t: new Date(t).toISOString(), ...(e.at.get(t) ?? empty).compute(q.metrics) })) : [],
      };
    }),
    total_groups: ranked.length,
    next_cursor: offset + q.limit < ranked.length ? String(offset + q.limit) : null,
  };
}

function compileFilter(filters: Partial<Record<Dimension, readonly string[]>>): (s: Series) => boolean {
  const rules = Object.entries(filters).filter(([, v]) => v !== undefined && v.length > 0) as Array<[Dimension, readonly string[]]>;
  const sets = rules.map(([d, v]) => [d, new Set(v)] as const);
  return (s) => sets.every(([d, allowed]) => allowed.has(s[d] ?? ''));
}

