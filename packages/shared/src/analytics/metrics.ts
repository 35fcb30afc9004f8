import { QUANTILES, sketchFromBins } from './schema';

/** What the query API computes, from the stored sums and sketches. */
export const METRICS = [
  'requests', 'started', 'completed', 'failed', 'errors_by_category', 'refused_budget', 'rate_limited', 'error_rate',
  'attempts', 'fallbacks', 'fallback_rate',
  'latency_p50', 'latency_p75', 'latency_p90', 'latency_p95', 'latency_p99', 'latency_avg',
  'ttft_p50', 'ttft_p75', 'ttft_p90', 'ttft_p95', 'ttft_p99', 'ttft_avg',
  'output_tokens_per_s', 'tokens_in', 'tokens_out', 'cost_micros', 'avoided_micros', 'cost_per_success_micros',
  'breaker_opens', 'conversion_rate',
] as const;
export type Metric = (typeof METRICS)[number];
export type MetricValue = number | null | Record<string, number>;

/** Sums and sketch bins of one bucket and group, as read from Redis. */
export class Accumulator {
  readonly sums = new Map<string, number>();
  readonly lat = new Map<string, number>();
  readonly ttft = new Map<string, number>();
  readonly fails = new Map<string, number>();

  add(metric: string, n: number): void {
    if (metric.startsWith('lat:')) bump(this.lat, metric.slice(4), n);
    else if (metric.startsWith('ttft:')) bump(this.ttft, metric.slice(5), n);
    else if (metric.startsWith('fail:')) {
      bump(this.fails, metric.slice(5), n);
      bump(this.sums, 'fail', n);
    } else bump(this.sums, metric, n);
  }

  merge(other: Accumulator): void {
    for (const [k, v] of other.sums) bump(this.sums, k, v);
    for (const [k, v] of other.lat) bump(this.lat, k, v);
    for (const [k, v] of other.ttft) bump(this.ttft, k, v);
    for (const [k, v] of other.fails) bump(this.fails, k, v);
  }

  get(metric: string): number {
    return this.sums.get(metric) ?? 0;
  }

  /** The asked metrics; a ratio or quantile with nothing to divide or rank is null. */
  compute(metrics: readonly Metric[]): Partial<Record<Metric, MetricValue>> {
    const out: Partial<Record<Metric, MetricValue>> = {};
    const g = (k: string) => this.get(k);
    const ratio = (a: number, b: number) => (b > 0 ? a / b : null);
    let latQ: Array<number | null> | undefined;
    let ttftQ: Array<number | null> | undefined;
    const quantiles = (bins: Map<string, number>) => {
      const s = sketchFromBins(bins);
      return QUANTILES.map((q) => (s.count > 0 ? round(s.getValueAtQuantile(q)) : null));
    };
    const count = (bins: Map<string, number>) => [...bins.values()].reduce((a, b) => a + b, 0);
    for (const m of metrics) {
      const qi = ['p50', 'p75', 'p90', 'p95', 'p99'].indexOf(m.slice(m.lastIndexOf('_') + 1));
      if (m.startsWith('latency_p')) out[m] = (latQ ??= quantiles(this.lat))[qi]!;
      else if (m.startsWith('ttft_p')) out[m] = (ttftQ ??= quantiles(this.ttft))[qi]!;
      else
        switch (m) {
          case 'requests': out[m] = g('req'); break;
          case 'started': out[m] = g('started'); break;
          case 'completed': out[m] = g('ok'); break;
          case 'failed': out[m] = g('fail'); break;
          case 'errors_by_category': out[m] = Object.fromEntries([...this.fails].filter(([, v]) => v > 0)); break;
          case 'refused_budget': out[m] = g('refused_budget'); break;
          case 'rate_limited': out[m] = g('rate_limited'); break;
          case 'error_rate': out[m] = ratio(g('fail'), g('ok') + g('fail')); break;
          case 'attempts': out[m] = g('attempts'); break;
          case 'fallbacks': out[m] = g('fallbacks'); break;
          case 'fallback_rate': out[m] = ratio(g('fallbacks'), g('ok') + g('fail')); break;
          case 'latency_avg': out[m] = nullable(ratio(g('lat_sum'), count(this.lat))); break;
          case 'ttft_avg': out[m] = nullable(ratio(g('ttft_sum'), count(this.ttft))); break;
          case 'output_tokens_per_s': out[m] = nullable(ratio(g('gen_tok') * 1000, g('gen_ms'))); break;
          case 'tokens_in': out[m] = g('tok_in'); break;
          case 'tokens_out': out[m] = g('tok_out'); break;
          case 'cost_micros': out[m] = g('cost'); break;
          case 'avoided_micros': out[m] = g('avoided'); break;
          // Integer micro-dollars, like every amount: rounded down.
          case 'cost_per_success_micros': out[m] = g('ok') > 0 ? Math.floor(g('cost') / g('ok')) : null; break;
          case 'breaker_opens': out[m] = g('breaker_open'); break;
          case 'conversion_rate': out[m] = ratio(g('ok'), g('started')); break;
        }
    }
    return out;
  }
}

function bump(map: Map<string, number>, key: string, n: number): void {
  map.set(key, (map.get(key) ?? 0) + n);
}
const round = (v: number) => Math.round(v * 100) / 100;
const nullable = (v: number | null) => (v === null ? null : round(v));
