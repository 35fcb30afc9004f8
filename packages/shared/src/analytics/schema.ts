import { DDSketch } from '@datadog/sketches-js';

/**
 * The analytics rollup layout, shared by the analytics service (writer) and the gateway (reader).
 *
 * One Redis hash per grain and bucket (`an:m:<start ms>`, `an:h:...`, `an:d:...`); a field is a
 * series (the values of every dimension) and a metric, and its value an integer sum. Quantiles are
 * DDSketch bins: `lat:<key>` counts the values that fall in the sketch's bucket `key`, so sketches
 * merge by addition, across buckets and instances, inside Redis and without rescanning events.
 */

export const GRAINS = ['minute', 'hour', 'day'] as const;
export type Grain = (typeof GRAINS)[number];

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
export const GRAIN_MS: Record<Grain, number> = { minute: MINUTE, hour: HOUR, day: DAY };
/** How long each grain is kept (from the bucket's start): 48 h of minutes, 90 days of hours, 2 years of days. */
export const GRAIN_RETENTION_MS: Record<Grain, number> = { minute: 48 * HOUR, hour: 90 * DAY, day: 730 * DAY };
const GRAIN_CODE: Record<Grain, string> = { minute: 'm', hour: 'h', day: 'd' };

export const bucketStart = (ms: number, grain: Grain) => ms - (ms % GRAIN_MS[grain]);

export function analyticsKeys(namespace: string) {
  const base = `${namespace}:an`;
  return {
    bucket: (grain: Grain, start: number) => `${base}:${GRAIN_CODE[grain]}:${start}`,
    /**
     * Event ids counted, per UTC day of counting (not of `occurred_at`: a republished event keeps
     * its id but not always its time): what makes a redelivery or replay count once.
     */
    seen: (dayStart: number) => `${base}:seen:${dayStart}`,
    /** A subject's funnel timeline for one UTC day. */
    timeline: (dayStart: number, user: string) => `${base}:tl:${dayStart}:${user}`,
    /** The subjects (user and project) with a timeline that day. */
    subjects: (dayStart: number) => `${base}:tlu:${dayStart}`,
    prefix: `${base}:`,
  };
}
export type AnalyticsKeys = ReturnType<typeof analyticsKeys>;

/** Dimensions of a series, in their order within the series string. */
export const DIMENSIONS = [
  'user', 'project', 'service', 'operation', 'provider', 'model', 'route', 'streamed', 'cache', 'flag_variant', 'journey',
] as const;
export type Dimension = (typeof DIMENSIONS)[number];
export type Series = Partial<Record<Dimension, string>>;

const SEP = '\x1f';
/** Between the series and the metric in a field name. */
export const METRIC_SEP = '\x1e';

const SEPARATORS = /[\x1e\x1f]/g;

/** Runs for every event analytics counts, so it builds one string and copies no value it need not. */
export function encodeSeries(s: Series): string {
  let out = '';
  for (let i = 0; i < DIMENSIONS.length; i++) {
    const v = s[DIMENSIONS[i]!];
    if (i > 0) out += SEP;
    if (v) out += v.includes(SEP) || v.includes(METRIC_SEP) ? v.replace(SEPARATORS, '') : v;
  }
  return out;
}

export function decodeSeries(text: string): Series {
  const parts = text.split(SEP);
  const out: Series = {};
  DIMENSIONS.forEach((d, i) => {
    const v = parts[i];
    if (v) out[d] = v;
  });
  return out;
}

/**
 * The sketches' relative accuracy: a reported quantile is within 1% of a value whose rank is the
 * asked one (DDSketch's guarantee, for values above ~1e-9; latencies are whole milliseconds).
 */
export const SKETCH_RELATIVE_ACCURACY = 0.01;
const MAPPING = new DDSketch({ relativeAccuracy: SKETCH_RELATIVE_ACCURACY }).mapping;

/** The bin a value falls in: `z` for zero, else the sketch mapping's key. */
export function sketchBin(value: number): string {
  return value <= 0 ? 'z' : String(MAPPING.key(value));
}

/** A sketch rebuilt from summed bins. */
export function sketchFromBins(bins: ReadonlyMap<string, number>): DDSketch {
  const sketch = new DDSketch({ relativeAccuracy: SKETCH_RELATIVE_ACCURACY });
  for (const [bin, n] of bins) {
    if (n <= 0) continue;
    if (bin === 'z') sketch.zeroCount += n;
    else sketch.store.add(Number(bin), n);
    sketch.count += n;
  }
  return sketch;
}

export const QUANTILES = [0.5, 0.75, 0.9, 0.95, 0.99] as const;
