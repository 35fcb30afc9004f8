import type Redis from 'ioredis';
import { formatUsd } from '../pricing/price';
import { type PriceTable, resolveModelPrice, selectPriceVersion } from '../pricing/price-table';
import { type Period, periodBounds, periodKey, periodKeys, previousPeriodKey } from '../time/periods';
import { type LedgerEntry } from './ledger-entry';
import { type GroupDimension, GROUP_DIMENSIONS, indexMember, ledgerKeys } from './ledger-keys';

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
 * sum of their days' aggregates, which the ledger's script keeps equal to the entries.
 */
export class LedgerReader {
  private readonly keys;

  constructor(
    private readonly redis: Redis,
    namespace: string,
  ) {
    this.keys = ledgerKeys(namespace);
  }

  /** Every aggregate field of a period (or of its days up to `until`), summed. */
  private async aggregate(period: Period, key: string, scope?: Scope, until?: Date): Promise<Fields> {
    const pipe = this.redis.pipeline();
    for (const day of daysOf(period, key, until)) pipe.hgetall(this.keys.day(day, scope));
    const sums: Fields = new Map();
    for (const [err, hash] of (await pipe.exec()) ?? []) {
      if (err) throw err;
      for (const [f, v] of Object.entries(hash as Record<string, string>)) sums.set(f, (sums.get(f) ?? 0) + Number(v));
    }
    return sums;
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
    const index = this.keys.index(q.scope);
    let min = q.cursor ? `(${Buffer.from(q.cursor, 'base64url').toString()}` : q.from ? `[${indexMember(q.from.getTime(), '')}` : '-';
    const max = q.to ? `(${indexMember(q.to.getTime(), '')}` : '+';
    const out: LedgerEntry[] = [];
    let last: string | undefined;
    for (;;) {
      const members = await this.redis.zrangebylex(index, min, max, 'LIMIT', 0, PAGE);
      if (members.length === 0) return { entries: out, next_cursor: null };
      const ids = members.map((m) => this.keys.entry(m.slice(m.indexOf(':') + 1)));
      const raw = await this.redis.mget(ids);
      for (const [i, r] of raw.entries()) {
        last = members[i]!;
        if (!r) continue;
        const e = JSON.parse(r) as LedgerEntry;
        if (q.provider && e.provider !== q.provider) continue;
        if (q.model && e.model !== q.model) continue;
        if (q.service && e.service !== q.service) continue;
        if (q.operation && e.operation !== q.operation) continue;
        out.push(e);
        if (out.length === limit) return { entries: out, next_cursor: Buffer.from(last).toString('base64url') };
      }
      if (members.length < PAGE) return { entries: out, next_cursor: null };
      min = `(${last}`;
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
      const distinct = await this.redis.pfcount(this.keys.fingerprints(month));
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
