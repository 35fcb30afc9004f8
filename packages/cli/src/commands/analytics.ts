import { type Command, InvalidArgumentError, Option } from 'commander';
import { parseInstant, parseList } from '../args';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table, usd } from '../format';
import { AnalyticsReader, DIMENSIONS, type Dimension, FunnelReader, GRANULARITIES, type Granularity, METRICS, type Metric, OVERVIEW_PERIODS, type OverviewPeriod } from '../shared';

interface Scoped extends GlobalOptions {
  user?: string;
  project?: string;
}

const scopeFilters = (o: Scoped): Partial<Record<Dimension, string[]>> => ({ ...(o.user && { user: [o.user] }), ...(o.project && { project: [o.project] }) });

/** `dim=value[,value]` pairs, repeatable. */
function parseFilter(raw: string, prev: Partial<Record<Dimension, string[]>> = {}): Partial<Record<Dimension, string[]>> {
  const m = /^([a-z_]+)=(.+)$/.exec(raw);
  if (!m || !(DIMENSIONS as readonly string[]).includes(m[1]!)) throw new InvalidArgumentError(`Expected dimension=value with a dimension of ${DIMENSIONS.join(', ')}.`);
  return { ...prev, [m[1]!]: m[2]!.split(',') };
}

function cell(metric: string, v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'object') return Object.entries(v as Record<string, number>).map(([k, n]) => `${k}:${n}`).join(' ') || '-';
  if (metric.endsWith('_micros')) return usd(v as number);
  if (metric.endsWith('_rate')) return `${((v as number) * 100).toFixed(1)}%`;
  if (/_p\d+$|_avg$/.test(metric)) return `${v} ms`;
  return String(v);
}

export function analyticsCommands(analytics: Command, globals: (cmd: Command) => GlobalOptions): void {
  analytics
    .command('overview')
    .description('headline numbers of the current UTC hour, day, week or month: requests, errors, latency, TTFT, cost, conversion')
    .addOption(new Option('--period <period>', OVERVIEW_PERIODS.join(', ')).choices(OVERVIEW_PERIODS).default('day'))
    .option('--user <id>', "only this user's traffic")
    .option('--project <id>', "only this project's traffic")
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as Scoped & { period: OverviewPeriod };
      await withContext(o, async ({ redis, namespace, out }) => {
        const v = await new AnalyticsReader(redis, namespace).overview(o.period, scopeFilters(o));
        if (out.json) return out.document(v);
        out.line(`Analytics for this ${v.period} (${v.from} to ${v.to})`);
        for (const l of table(['METRIC', 'VALUE'], Object.entries(v.totals).map(([k, x]) => [k, cell(k, x)]), [1])) out.line(l);
        if (v.by_model.length) {
          out.line();
          const cols = ['completed', 'error_rate', 'latency_p50', 'latency_p95', 'ttft_p50', 'cost_micros', 'cost_per_success_micros'] as const;
          const rows = v.by_model.map((m) => [`${m.provider ?? '-'}/${m.model}`, ...cols.map((c) => cell(c, m[c]))]);
          for (const l of table(['MODEL', ...cols.map((c) => c.toUpperCase())], rows, [1, 2, 3, 4, 5, 6, 7])) out.line(l);
        }
        if (v.conversion.length) {
          out.line();
          for (const l of table(['WORKFLOW', 'STARTED', 'COMPLETED', 'CONVERSION'], v.conversion.map((c) => [c.workflow, cell('started', c.started), cell('completed', c.completed), cell('conversion_rate', c.conversion_rate)]), [1, 2, 3])) out.line(l);
        }
      });
    });

  analytics
    .command('query')
    .description('metrics over time, grouped and filtered, from the rollups')
    .requiredOption('--metrics <list>', `comma-separated: ${METRICS.join(', ')}`, parseList(METRICS, 'metric'))
    .option('--group-by <list>', `comma-separated: ${DIMENSIONS.join(', ')}`, parseList(DIMENSIONS, 'dimension'))
    .option('--filter <dim=value>', 'only these values of a dimension (repeatable)', parseFilter)
    .option('--from <time>', 'start: -1h, -7d, an ISO date(-time) or epoch ms (default -1h)', parseInstant())
    .option('--to <time>', 'end (default now)', parseInstant())
    .addOption(new Option('--granularity <g>', GRANULARITIES.join(', ')).choices(GRANULARITIES).default('auto'))
    .option('--series', 'print every bucket, not only the totals')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { metrics: Metric[]; groupBy?: Dimension[]; filter?: Partial<Record<Dimension, string[]>>; from?: Date; to?: Date; granularity: Granularity; series?: boolean };
      const to = o.to?.getTime() ?? Date.now();
      const from = o.from?.getTime() ?? to - 3_600_000;
      if (from >= to) throw new CliError('--from must be before --to.');
      await withContext(o, async ({ redis, namespace, out }) => {
        const r = await new AnalyticsReader(redis, namespace).query({ metrics: o.metrics, group_by: o.groupBy ?? [], filters: o.filter ?? {}, from, to, granularity: o.granularity, limit: 1_000, series: Boolean(o.series) || out.json });
        if (out.json) return out.document(r);
        out.line(`${r.from} to ${r.to}, ${r.granularity} buckets, ${r.total_groups} group(s)`);
        const dims = o.groupBy ?? [];
        const rows: string[][] = [];
        for (const g of r.groups) {
          const key = dims.map((d) => g.key[d] ?? '-');
          rows.push([...key, ...(o.series ? ['total'] : []), ...o.metrics.map((m) => cell(m, g.totals[m]))]);
          if (o.series) for (const p of g.series) rows.push([...key, p.t, ...o.metrics.map((m) => cell(m, p[m]))]);
        }
        if (rows.length === 0) return out.line('No data in this range.');
        const headers = [...dims.map((d) => d.toUpperCase()), ...(o.series ? ['BUCKET'] : []), ...o.metrics.map((m) => m.toUpperCase())];
        for (const l of table(headers, rows, o.metrics.map((_, i) => headers.length - o.metrics.length + i))) out.line(l);
      });
    });

  analytics
    .command('funnel')
    .description('conversion through ordered event steps inside a window (per user or per request)')
    .requiredOption('--steps <list>', 'comma-separated event types or patterns, in order (at least two)', (raw: string) => {
      const steps = raw.split(',').map((s) => s.trim()).filter(Boolean);
      if (steps.length < 2 || steps.length > 10) throw new InvalidArgumentError('Give 2 to 10 steps.');
      return steps;
    })
    .option('--window <duration>', 'from the first step to the last, e.g. 30m, 1d (default 1d)', (raw: string) => {
      const m = /^(\d{1,6})(s|m|h|d)$/.exec(raw);
      if (!m) throw new InvalidArgumentError('Expected a duration such as 30s, 15m, 2h or 7d.');
      return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's']!;
    })
    .option('--from <time>', 'first steps from (default -1d)', parseInstant())
    .option('--to <time>', 'first steps until (default now)', parseInstant())
    .addOption(new Option('--by <subject>', 'user or request').choices(['user', 'request']).default('user'))
    .option('--user <id>', 'only this user')
    .option('--project <id>', 'only this project')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as Scoped & { steps: string[]; window?: number; from?: Date; to?: Date; by: 'user' | 'request' };
      const to = o.to?.getTime() ?? Date.now();
      await withContext(o, async ({ redis, namespace, out }) => {
        const r = await new FunnelReader(redis, namespace).run({
          steps: o.steps.map((event) => ({ event })),
          window_ms: o.window ?? 86_400_000,
          from: o.from?.getTime() ?? to - 86_400_000,
          to,
          by: o.by,
          ...(o.user && { users: [o.user] }),
          ...(o.project && { projects: [o.project] }),
        });
        if (out.json) return out.document(r);
        out.line(`Funnel by ${r.by}, ${r.subjects} subject(s), window ${r.window_ms / 1000} s (${r.from} to ${r.to})`);
        const rows = r.steps.map((s, i) => [String(i + 1), s.event, String(s.count), cell('x_rate', s.conversion_from_previous), cell('x_rate', s.conversion_from_first), String(s.drop_off), s.median_ms_from_previous === null ? '-' : `${s.median_ms_from_previous} ms`]);
        for (const l of table(['STEP', 'EVENT', 'COUNT', 'FROM PREVIOUS', 'FROM FIRST', 'DROP-OFF', 'MEDIAN GAP'], rows, [2, 3, 4, 5, 6])) out.line(l);
      });
    });
}
