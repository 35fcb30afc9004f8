import type Redis from 'ioredis';
import { formatUsd } from '../pricing/price';
import { type PriceTable, resolveModelPrice, selectPriceVersion } from '../pricing/price-table';
import { type Period, periodBounds, periodKey, periodKeys, previousPeriodKey } from '../time/periods';
import { type LedgerEntry } from './ledger-entry';
import { tenantShardsFrom } from '../config';
import { pipelinePerShard, shardsFor } from '../tenant-shards';
import { type GroupDimension, GROUP_DIMENSIONS, indexMember, type LedgerKeys, ledgerShards } from './ledger-keys';

export interface Money {
  micros: number;
  usd: string;
}
export const money = (micros: number): Money => ({ micros, usd: formatUsd(micros) });

export interface Scope {
  user?: string;
  project?: string;
}

export interface Summary {
  period: Period;
  period_key: string;
  start: string;
  end: string;
  total: Money;
  avoided: Money;
  entries: number;
  group_by?: GroupDimension;
  groups?: Array<{ key: string } & Money>;
}

export interface CostReport {
  period: Period;
  period_key: string;
  start: string;
  end: string;
  total: Money;
  avoided: Money;
  entries: number;
  previous_total: Money;
  change: Money & { pct: number | null };
  top: Record<'services' | 'operations' | 'providers' | 'models' | 'users' | 'projects', Array<{ key: string } & Money>>;
  generated_at: string;
  /** Latency, errors and conversion of the same period, from the analytics rollups (when the report job has them). */
  analytics?: ReportAnalytics;
}

export interface ReportAnalytics {
  totals: Record<string, number | null | Record<string, number>>;
  by_model: Array<Record<string, number | string | null | Record<string, number>>>;
  conversion: Array<Record<string, number | string | null | Record<string, number>>>;
}

export interface Recommendation {
  id: 'vision_to_deepseek' | 'cache_repeated_requests' | 'cheaper_model_for_short_outputs';
  title: string;
  estimated_monthly_saving: Money;
  evidence: Record<string, string | number>;
}

export interface EntryQuery {
  scope?: Scope;
  from?: Date;
  to?: Date;
  provider?: string;
  model?: string;
  service?: string;
  operation?: string;
  limit?: number;
  cursor?: string;
}

type Fields = Map<string, number>;

const DAY_MS = 86_400_000;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const PAGE = 500;

/** The UTC days a period covers, as day keys. */
function daysOf(period: Period, key: string, until?: Date): string[] {
  const { start, end } = periodBounds(period, key);
  const stop = until && until.getTime() < end.getTime() ? until.getTime() + 1 : end.getTime();
  const days: string[] = [];
  for (let t = start.getTime(); t < stop; t += DAY_MS) days.push(periodKey('day', t));
  return days;
}

function top(fields: Fields, dimension: GroupDimension, n = Infinity): Array<{ key: string } & Money> {
  const prefix = `${dimension}:`;
  return [...fields]
    .filter(([f]) => f.startsWith(prefix))
    .map(([f, v]) => ({ key: f.slice(prefix.length), ...money(v) }))
    .sort((a, b) => b.micros - a.micros || a.key.localeCompare(b.key))
    .slice(0, n);
}

/**
 * Read side of the ledger, for the cost API and the report job. Week and month figures are the
 * sum of their days' detail, which the ledger's scripts keep equal to the entries. A project's
 * figures are in its tenant shard; a user's (who may spend in projects of several shards), the
 * global ones and the lists of all entries are merged over the shards.
 */
export class LedgerReader {
  private readonly shards: LedgerKeys[];

  constructor(
    private readonly redis: Redis,
    namespace: string,
    shards = tenantShardsFrom(),
  ) {
    this.shards = ledgerShards(namespace, shards);
  }

  /** The shards holding a scope's entries and detail: a project's own, else all. */
  private shardsOf(scope?: Scope): readonly LedgerKeys[] {
    return shardsFor(scope?.user === undefined && scope?.project !== undefined ? [scope.project] : undefined, this.shards);
  }

  /** Every aggregate field of a period (or of its days up to `until`), summed. */
  private async aggregate(period: Period, key: string, scope?: Scope, until?: Date): Promise<Fields> {
    const days = daysOf(period, key, until);
    const hashes = await pipelinePerShard(this.redis, this.shardsOf(scope), (pipe, k) => {
      for (const day of days) pipe.hgetall(k.detail(day, scope));
    });
    const sums: Fields = new Map();
    for (const hash of hashes.flat()) {
      for (const [f, v] of Object.entries(hash as Record<string, string>)) sums.set(f, (sums.get(f) ?? 0) + Number(v));
    }
    return sums;
  }

  /** Entries written whose running totals may not be applied yet (0 once the ledger is still). */
  pendingCount(): Promise<number> {
    return this.pendingIn(this.shards);
  }

  private async pendingIn(shards: readonly LedgerKeys[]): Promise<number> {
    return sum(await Promise.all(shards.map((k) => this.redis.scard(k.pending))));
  }

  /**
   * At least how many of a scope's entries are in the running totals too: its entries less what
   * its shards hold pending between the ledger's steps. What to wait on before reading totals.
   */
  async appliedCount(scope?: Scope): Promise<number> {
    const n = await this.count(scope);
    return n - (await this.pendingIn(this.shardsOf(scope)));
  }

  /** How many entries a scope has (all of them without one). */
  async count(scope?: Scope): Promise<number> {
    return sum(await Promise.all(this.shardsOf(scope).map((k) => this.redis.zcard(k.index(scope)))));
  }

  /**
   * A scope's aggregate fields for a period (its days up to `until`), summed: `total`, `count`,
   * `service:..`, `model:..` and the rest, with `user:..` and `project:..` globally, `project:..`
   * inside a user and `user:..` inside a project. Exact: the ledger's script writes them with the
   * entries.
   */
  fields(period: Period, key: string, scope?: Scope, until?: Date): Promise<Map<string, number>> {
    return this.aggregate(period, key, scope, until);
  }

  async summary(q: { period: Period; at: Date; groupBy?: GroupDimension; scope?: Scope }): Promise<Summary> {
    const key = periodKey(q.period, q.at);
    const { start, end } = periodBounds(q.period, key);
    const fields = await this.aggregate(q.period, key, q.scope);
    return {
      period: q.period,
      period_key: key,
      start: start.toISOString(),
      end: end.toISOString(),
      total: money(fields.get('total') ?? 0),
      avoided: money(fields.get('avoided') ?? 0),
      entries: fields.get('count') ?? 0,
      ...(q.groupBy && { group_by: q.groupBy, groups: top(fields, q.groupBy) }),
    };
  }

  /** Entries in time order, filtered, with an opaque cursor for the next page. */
  async entries(q: EntryQuery): Promise<{ entries: LedgerEntry[]; next_cursor: string | null }> {
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 1_000);
    const shards = this.shardsOf(q.scope);
    let min = q.cursor ? `(${Buffer.from(q.cursor, 'base64url').toString()}` : q.from ? `[${indexMember(q.from.getTime(), '')}` : '-';
    const max = q.to ? `(${indexMember(q.to.getTime(), '')}` : '+';
    const out: LedgerEntry[] = [];
    for (;;) {
      // A page from each shard's index, merged by member (time, then id). Members past the
      // smallest last member of a full page may have an earlier one still unread in that shard,
      // so they wait for the next round.
      const pages = await Promise.all(shards.map((k) => this.redis.zrangebylex(k.index(q.scope), min, max, 'LIMIT', 0, PAGE)));
      const full = pages.filter((page) => page.length === PAGE).map((page) => page[page.length - 1]!);
      const bound = full.length > 0 ? full.reduce((a, b) => (b < a ? b : a)) : undefined;
      const merged = pages
        .flatMap((page, s) => page.filter((m) => bound === undefined || m <= bound).map((m) => [m, s] as const))
        .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      if (merged.length === 0) return { entries: out, next_cursor: null };
      const bodies = new Map<string, string | null>();
      await Promise.all(
        shards.map(async (k, s) => {
          const members = merged.filter(([, at]) => at === s).map(([m]) => m);
          if (members.length === 0) return;
          const raw = await this.redis.mget(members.map((m) => k.entry(m.slice(m.indexOf(':') + 1))));
          members.forEach((m, i) => bodies.set(m, raw[i] ?? null));
        }),
      );
      for (const [m] of merged) {
        const r = bodies.get(m);
        if (!r) continue;
        const e = JSON.parse(r) as LedgerEntry;
        if (q.provider && e.provider !== q.provider) continue;
        if (q.model && e.model !== q.model) continue;
        if (q.service && e.service !== q.service) continue;
        if (q.operation && e.operation !== q.operation) continue;
        out.push(e);
        if (out.length === limit) return { entries: out, next_cursor: Buffer.from(m).toString('base64url') };
      }
      if (bound === undefined) return { entries: out, next_cursor: null };
      min = `(${bound}`;
    }
  }

  async report(period: Period, key: string): Promise<CostReport> {
    const { start, end } = periodBounds(period, key);
    const [fields, previous] = await Promise.all([
      this.aggregate(period, key),
      this.aggregate(period, previousPeriodKey(period, key)),
    ]);
    const total = fields.get('total') ?? 0;
    const prev = previous.get('total') ?? 0;
    return {
      period,
      period_key: key,
      start: start.toISOString(),
      end: end.toISOString(),
      total: money(total),
      avoided: money(fields.get('avoided') ?? 0),
      entries: fields.get('count') ?? 0,
      previous_total: money(prev),
      change: { ...money(total - prev), pct: prev === 0 ? null : Math.round(((total - prev) / prev) * 1000) / 10 },
      top: {
        services: top(fields, 'service', 5),
        operations: top(fields, 'operation', 5),
        providers: top(fields, 'provider', 5),
        models: top(fields, 'model', 5),
        users: top(fields, 'user', 5),
        projects: top(fields, 'project', 5),
      },
      generated_at: new Date().toISOString(),
    };
  }

  /**
   * Savings the ledger's own data shows, projected to a whole month from the month so far. Each
   * names its evidence; none is shown when it would save nothing.
   */
  async recommendations(at: Date, table: PriceTable): Promise<Recommendation[]> {
    const month = periodKeys(at).month;
    const fields = await this.aggregate('month', month, undefined, at);
    const elapsedDays = daysOf('month', month, at).length;
    const factor = daysOf('month', month).length / Math.max(1, elapsedDays);
    const version = selectPriceVersion(table, at);
    const rate = (provider: string, model: string) => {
      try {
        return resolveModelPrice(version, provider, model).price;
      } catch {
        return undefined;
      }
    };
    const out: Recommendation[] = [];

    const gemini = rate('gemini', 'gemini-2.0-flash')?.per_image;
    const deepseek = rate('deepseek', 'deepseek-vl2')?.per_image;
    const geminiVisionCalls = [...fields].filter(([f]) => f.startsWith('calls:vision|gemini/')).reduce((s, [, v]) => s + v, 0);
    if (gemini && deepseek && gemini > deepseek && geminiVisionCalls > 0) {
      out.push({
        id: 'vision_to_deepseek',
        title: `Route standard-quality vision to DeepSeek: it costs ${Math.round((1 - deepseek / gemini) * 100)}% less per image than Gemini`,
        estimated_monthly_saving: money(Math.round(geminiVisionCalls * (gemini - deepseek) * factor)),
        evidence: { gemini_vision_calls_this_month: geminiVisionCalls, gemini_per_image_micros: gemini, deepseek_per_image_micros: deepseek },
      });
    }

    const fingerprinted = fields.get('fingerprinted') ?? 0;
    if (fingerprinted > 0) {
      // Per shard: a project's repeats are within its own shard (answer caches are per tenant too).
      const distinct = sum(await Promise.all(this.shards.map((k) => this.redis.pfcount(k.fingerprints(month)))));
      const repeats = Math.max(0, fingerprinted - distinct);
      const average = (fields.get('fingerprinted_micros') ?? 0) / fingerprinted;
      const saving = Math.round(repeats * average * factor);
      if (saving > 0) {
        out.push({
          id: 'cache_repeated_requests',
          // Only requests no answer cache covered are fingerprinted: where one works, nothing is suggested.
          title: 'Cache identical requests (Cache-Control: max-age=N, or the project\'s chat_ttl_seconds): the same question was asked and paid for more than once',
          estimated_monthly_saving: money(saving),
          evidence: {
            requests_this_month: fingerprinted,
            distinct_requests: distinct,
            repeated_requests: repeats,
            average_cost_micros: Math.round(average),
            already_saved_by_cache_micros: fields.get('avoided') ?? 0,
          },
        });
      }
    }

    const cheap = rate('openai', 'gpt-4o-mini');
    for (const [f, calls] of fields) {
      if (!f.startsWith('short:')) continue;
      const modelKey = f.slice('short:'.length);
      const [provider, ...rest] = modelKey.split('/');
      const price = rate(provider ?? '', rest.join('/'));
      const spent = fields.get(`short_micros:${modelKey}`) ?? 0;
      if (!price?.output_per_mtok || !cheap?.output_per_mtok || price.output_per_mtok <= cheap.output_per_mtok * 2) continue;
      const saving = Math.round(spent * (1 - cheap.output_per_mtok / price.output_per_mtok) * factor);
      if (saving <= 0) continue;
      out.push({
        id: 'cheaper_model_for_short_outputs',
        title: `Use gpt-4o-mini for short answers now served by ${modelKey}`,
        estimated_monthly_saving: money(saving),
        evidence: { model: modelKey, short_calls_this_month: calls, short_calls_micros: spent, output_per_mtok_micros: price.output_per_mtok, alternative: 'openai/gpt-4o-mini' },
      });
    }
    return out.sort((a, b) => b.estimated_monthly_saving.micros - a.estimated_monthly_saving.micros);
  }
}

export { GROUP_DIMENSIONS };
