import type { ErrorCategory } from '../errors/classify';

export interface ErrorRateTrackerOptions {
  /** Window length in ms, rounded up to whole seconds. Default 60000. */
  windowMs?: number;
  now?: () => number;
}

export interface ErrorRateEntry {
  service: string;
  category: ErrorCategory;
  errors: number;
  /** Every outcome (errors + successes) of the service in the window. */
  total: number;
  /** errors / total, 0..1. */
  ratio: number;
}

interface Bucket {
  second: number;
  successes: number;
  errors: Map<ErrorCategory, number>;
}

const BUCKET_MS = 1000;

/**
 * Error ratios per service and category over a rolling window of 1-second buckets.
 * No timers: stale buckets are dropped lazily on every read or write.
 */
export class ErrorRateTracker {
  private readonly windowSeconds: number;
  private readonly now: () => number;
  private readonly services = new Map<string, Bucket[]>();

  constructor(options?: ErrorRateTrackerOptions) {
    this.windowSeconds = Math.max(1, Math.ceil((options?.windowMs ?? 60_000) / BUCKET_MS));
    this.now = options?.now ?? Date.now;
  }

  recordError(service: string, category: ErrorCategory): void {
    const bucket = this.current(service);
    bucket.errors.set(category, (bucket.errors.get(category) ?? 0) + 1);
  }

  recordSuccess(service: string): void {
    this.current(service).successes += 1;
  }

  /** One row per service and category that had errors in the window, sorted by service then category. */
  snapshot(): ErrorRateEntry[] {
    const nowSecond = this.second();
    const rows: ErrorRateEntry[] = [];
    for (const [service, buckets] of this.services) {
      const live = this.prune(buckets, nowSecond);
      if (live.length === 0) {
        this.services.delete(service);
        continue;
      }
      this.services.set(service, live);
      let total = 0;
      const errors = new Map<ErrorCategory, number>();
      for (const b of live) {
        total += b.successes;
        for (const [category, n] of b.errors) {
          total += n;
          errors.set(category, (errors.get(category) ?? 0) + n);
        }
      }
      for (const [category, n] of errors) {
        rows.push({ service, category, errors: n, total, ratio: total === 0 ? 0 : n / total });
      }
    }
    return rows.sort((a, b) => a.service.localeCompare(b.service) || a.category.localeCompare(b.category));
  }

  private second(): number {
    return Math.floor(this.now() / BUCKET_MS);
  }

  private prune(buckets: Bucket[], nowSecond: number): Bucket[] {
    const oldest = nowSecond - this.windowSeconds + 1;
    return buckets.filter((b) => b.second >= oldest && b.second <= nowSecond);
  }

  private current(service: string): Bucket {
    const nowSecond = this.second();
    const buckets = this.prune(this.services.get(service) ?? [], nowSecond);
    let bucket = buckets[buckets.length - 1];
    if (!bucket || bucket.second !== nowSecond) {
      bucket = { second: nowSecond, successes: 0, errors: new Map() };
      buckets.push(bucket);
    }
    this.services.set(service, buckets);
    return bucket;
  }
}
