import { Argument, type Command, Option } from 'commander';
import { parseMicros, parseThresholds, parseUsd } from '../args';
import { type GlobalOptions, withContext } from '../context';
import { CliError, type Output, table, usd, usdColumn } from '../format';
import {
  type Budget,
  BUDGET_SCOPES,
  budgetScopeIdSchema,
  BudgetStore,
  DEFAULT_THRESHOLDS_PCT,
  formatUsd,
  GLOBAL_SCOPE_ID,
  type PeriodBudget,
  type PeriodStatus,
} from '../shared';

type BudgetScope = (typeof BUDGET_SCOPES)[number];
type Period = PeriodBudget['period'];

interface SetOptions extends GlobalOptions {
  period: Period;
  limitUsd?: number;
  limitMicros?: number;
  hard?: boolean;
  thresholds?: number[];
}

/** Status rows for JSON: every amount in micros and as exact USD. */
function statusJson(s: PeriodStatus) {
  return {
    ...s,
    spent_usd: formatUsd(s.spent_micros),
    limit_usd: s.limit_micros === null ? null : formatUsd(s.limit_micros),
  };
}

function scopeId(scope: BudgetScope, id: string | undefined): string {
  if (scope === 'global') {
    if (id !== undefined && id !== GLOBAL_SCOPE_ID) throw new CliError('The global budget takes no id: budgets set global --period ...');
    return GLOBAL_SCOPE_ID;
  }
  if (id === undefined) throw new CliError(`A ${scope} budget needs the ${scope} id: budgets set ${scope} <id> --period ...`);
  const parsed = budgetScopeIdSchema.safeParse(id);
  if (!parsed.success) throw new CliError(`${scope} id "${id}": ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

function describe(b: PeriodBudget): string {
  return `${usd(b.limit_micros)} per ${b.period}, ${b.mode}, alerts at ${b.thresholds_pct.join('/')}%`;
}

function printStatus(out: Output, rows: Array<{ scope: string; scope_id: string; source: string; budget?: PeriodBudget; status: PeriodStatus }>): void {
  const paintUsed = (s: PeriodStatus) => {
    if (s.used_pct === null) return '-';
    const text = `${s.used_pct}%`;
    return s.blocked || s.used_pct >= 100 ? out.paint('red', text) : s.used_pct >= 80 ? out.paint('yellow', text) : text;
  };
  const limits = usdColumn(rows.map((r) => r.status.limit_micros ?? 0));
  const spent = usdColumn(rows.map((r) => r.status.spent_micros));
  const lines = table(
    ['SCOPE', 'ID', 'PERIOD', 'LIMIT', 'MODE', 'ALERTS AT', 'SPENT', 'USED', 'STATE'],
    rows.map((r, i) => [
      r.scope,
      r.scope_id,
      `${r.status.period} ${r.status.period_key}`,
      r.status.limit_micros === null ? '-' : limits[i]!,
      r.status.mode ?? '-',
      r.budget ? `${r.budget.thresholds_pct.join('/')}%` : '-',
      spent[i]!,
      paintUsed(r.status),
      r.status.blocked ? out.paint('red', 'BLOCKED') : r.source,
    ]),
    [3, 6, 7],
  );
  for (const l of lines) out.line(l);
}

export function budgetsCommands(budgets: Command, globals: (cmd: Command) => GlobalOptions): void {
  budgets
    .command('set')
    .description("set one period's budget of a scope (its other periods are kept)")
    .addArgument(new Argument('<scope>', 'whose budget').choices(BUDGET_SCOPES))
    .argument('[id]', 'the user or project id (none for global)')
    .addOption(new Option('--period <period>', 'the budget period').choices(['day', 'week', 'month']).makeOptionMandatory())
    .addOption(new Option('--limit-usd <amount>', 'limit in USD, e.g. 12.50').argParser(parseUsd).conflicts('limitMicros'))
    .addOption(new Option('--limit-micros <micros>', 'limit in micro-dollars (1 USD = 1000000)').argParser(parseMicros))
    .option('--hard', 'refuse new paid work once the limit is reached (default: alert only)')
    .option('--thresholds <list>', `alert percentages (default ${DEFAULT_THRESHOLDS_PCT.join(',')})`, parseThresholds)
    .option('--json', 'print JSON')
    .action(async (scope: BudgetScope, id: string | undefined, _o, cmd: Command) => {
      const o = globals(cmd) as SetOptions;
      const limit = o.limitUsd ?? o.limitMicros;
      if (limit === undefined) throw new CliError('Give the limit with --limit-usd <amount> or --limit-micros <micros>.');
      const sid = scopeId(scope, id);
      const period: PeriodBudget = { period: o.period, limit_micros: limit, mode: o.hard ? 'hard' : 'soft', thresholds_pct: o.thresholds ?? [...DEFAULT_THRESHOLDS_PCT] };
      await withContext(o, async ({ redis, namespace, out }) => {
        const store = new BudgetStore(redis, namespace);
        // The store replaces a scope's whole budget; keep the periods this command does not name.
        const kept = ((await store.get(scope, sid))?.periods ?? []).filter((p) => p.period !== o.period);
        const { budget, created } = await store.put(scope, sid, { periods: [...kept, period] });
        const status = (await store.status(scope, sid)).find((s) => s.period === o.period)!;
        if (out.json) return out.document({ budget, created, status: statusJson(status) });
        const who = scope === 'global' ? 'global' : `${scope} ${sid}`;
        out.line(`Set the ${who} budget: ${describe(period)}.`);
        out.line(`Spent so far in ${o.period} ${status.period_key}: ${usd(status.spent_micros)} (${status.used_pct ?? 0}%)${status.blocked ? `, ${out.paint('red', 'blocked')}` : ''}.`);
      });
    });

  budgets
    .command('list')
    .description('budgets with the spend of the current periods (global includes the configured defaults)')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        const store = new BudgetStore(redis, namespace);
        const [stored, defaults] = await Promise.all([store.list(), store.defaults()]);
        const scopes: Array<{ scope: BudgetScope; scope_id: string; budget: Budget | null }> = stored.map((b) => ({ scope: b.scope, scope_id: b.scope_id, budget: b }));
        if (!stored.some((b) => b.scope === 'global')) scopes.unshift({ scope: 'global', scope_id: GLOBAL_SCOPE_ID, budget: null });
        const order: Record<BudgetScope, number> = { global: 0, project: 1, user: 2 };
        scopes.sort((a, b) => order[a.scope] - order[b.scope] || a.scope_id.localeCompare(b.scope_id));
        const withStatus = await Promise.all(scopes.map(async (s) => ({ ...s, status: await store.status(s.scope, s.scope_id) })));

        if (out.json) {
          return out.document({
            budgets: withStatus.map((s) => ({ scope: s.scope, scope_id: s.scope_id, budget: s.budget, status: s.status.map(statusJson) })),
            global_defaults: defaults ?? [],
          });
        }
        const rows = withStatus.flatMap((s) =>
          s.status
            .filter((st) => st.limit_micros !== null)
            .map((st) => {
              const own = s.budget?.periods.find((p) => p.period === st.period);
              const budget = own ?? (s.scope === 'global' ? defaults?.find((p) => p.period === st.period) : undefined);
              return { scope: s.scope, scope_id: s.scope_id, source: own ? 'set' : 'default', budget, status: st };
            }),
        );
        if (rows.length === 0) return out.line('No budgets set (and the alerting service has not published the global defaults yet).');
        printStatus(out, rows);
      });
    });
}
