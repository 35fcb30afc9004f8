import { type Command, Option } from 'commander';
import { parseDate } from '../args';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table, usd, usdColumn } from '../format';
import { GROUP_DIMENSIONS, type GroupDimension, LedgerReader, type Period, type Scope } from '../shared';

interface SummaryOptions extends GlobalOptions {
  period: Period;
  groupBy?: GroupDimension;
  at?: Date;
  user?: string;
  project?: string;
}

function idOption(flag: '--user' | '--project', raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  // The cost API's alphabet: ids as keys carry them, plus the ledger's own `(none)`-style placeholders.
  if (!/^[A-Za-z0-9._()-]{1,64}$/.test(raw)) throw new CliError(`${flag}: letters, digits, dot, dash, underscore or parentheses (1-64)`);
  return raw;
}

/** The period's last day: `end` is exclusive. */
const lastDay = (end: string) => new Date(Date.parse(end) - 1).toISOString().slice(0, 10);

const share = (part: number, total: number) => (total === 0 ? '-' : `${((part / total) * 100).toFixed(1)}%`);

export function costsCommands(costs: Command, globals: (cmd: Command) => GlobalOptions): void {
  costs
    .command('summary')
    .description('spend of one UTC day, ISO week or month, from the ledger')
    .addOption(new Option('--period <period>', 'day, week or month').choices(['day', 'week', 'month']).default('day'))
    .addOption(new Option('--group-by <dimension>', 'break the total down').choices(GROUP_DIMENSIONS))
    .option('--at <date>', 'a date inside the period (default now)', parseDate)
    .addOption(new Option('--user <id>', "only this user's spend").conflicts('project'))
    .option('--project <id>', "only this project's spend")
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as SummaryOptions;
      const user = idOption('--user', o.user);
      const project = idOption('--project', o.project);
      const scope: Scope | undefined = user ? { user } : project ? { project } : undefined;
      if (scope && (o.groupBy === 'user' || o.groupBy === 'project')) {
        throw new CliError(`--group-by ${o.groupBy} covers everyone's spend: drop --user/--project.`);
      }
      await withContext(o, async ({ redis, namespace, out }) => {
        const s = await new LedgerReader(redis, namespace).summary({ period: o.period, at: o.at ?? new Date(), ...(o.groupBy && { groupBy: o.groupBy }), ...(scope && { scope }) });
        const whose = user ? `user ${user}` : project ? `project ${project}` : 'all users';
        if (out.json) return out.document({ ...s, scope: scope ?? 'all' });
        out.line(`Spend for the ${s.period} ${s.period_key} (${s.start.slice(0, 10)} to ${lastDay(s.end)} UTC, ${whose})`);
        out.line(`total    ${out.paint('bold', usd(s.total.micros))} in ${s.entries} ${s.entries === 1 ? 'entry' : 'entries'}`);
        if (s.avoided.micros > 0) out.line(`avoided  ${usd(s.avoided.micros)} (answered from the cache)`);
        if (!s.group_by) return;
        out.line();
        if (!s.groups?.length) return out.line(`No spend by ${s.group_by} in this ${s.period}.`);
        const amounts = usdColumn(s.groups.map((g) => g.micros));
        const rows = s.groups.map((g, i) => [g.key, amounts[i]!, share(g.micros, s.total.micros)]);
        for (const l of table([s.group_by.toUpperCase(), 'SPEND', 'SHARE'], rows, [1, 2])) out.line(l);
      });
    });
}
