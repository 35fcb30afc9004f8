import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table, usd } from '../format';
import { JOURNEY_STATES, JourneyStore, type JourneyState, type JourneyView, type TemplateStats } from '../shared';

const pct = (r: number | null) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);
const ms = (v: number | null | undefined) => (v === null || v === undefined ? '-' : v >= 60_000 ? `${(v / 60_000).toFixed(1)} min` : `${(v / 1000).toFixed(1)} s`);

function version(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d{1,6}$/.test(raw) || Number(raw) < 1) throw new CliError('--version: a template version number (1, 2, ...)');
  return Number(raw);
}

function printJourney(out: { line: (s: string) => void }, v: JourneyView): void {
  out.line(`${v.id}  ${v.template} v${v.template_version}  ${v.state}  ${v.progress_pct}%  user ${v.user_id} / ${v.project_id}  cost ${usd(v.cost.total.micros)}`);
  const rows = v.steps.map((s) => [s.key, s.required ? 'required' : 'optional', String(s.weight), s.status, s.completed_at ?? '-', ms(s.time_in_step_ms), usd(s.cost.micros)]);
  for (const l of table(['STEP', 'KIND', 'WEIGHT', 'STATUS', 'COMPLETED', 'TIME IN STEP', 'COST'], rows, [2, 5, 6])) out.line(l);
  if (v.cost.unassigned.micros > 0) out.line(`not tied to a step: ${usd(v.cost.unassigned.micros)}`);
}

function printStats(out: { line: (s: string) => void }, s: TemplateStats): void {
  out.line(`${s.template} v${s.version}: ${s.started} started, ${s.completed} completed (${pct(s.completion_rate)}), ${s.abandoned} abandoned, ${s.cancelled} cancelled, ${s.active} active`);
  out.line(`cost per completed journey: ${s.cost_per_completed ? usd(s.cost_per_completed.micros) : '-'}`);
  const rows = s.steps.map((x) => [x.key, String(x.reached), String(x.completed), pct(x.conversion), String(x.drop_off), pct(x.drop_off_rate), String(x.abandoned_here), ms(x.time_in_step_p50_ms), ms(x.time_in_step_p90_ms)]);
  for (const l of table(['STEP', 'REACHED', 'COMPLETED', 'CONVERSION', 'DROP-OFF', 'DROP RATE', 'ABANDONED', 'P50 TIME', 'P90 TIME'], rows, [1, 2, 3, 4, 5, 6, 7, 8])) out.line(l);
}

export function journeysCommands(journeys: Command, globals: (cmd: Command) => GlobalOptions): void {
  journeys
    .command('templates')
    .description('the latest version of every journey template')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        const templates = await new JourneyStore(redis, namespace, 'cli').templates();
        if (out.json) return out.document({ templates });
        const rows = templates.map((t) => [t.key, `v${t.version}`, t.title, t.steps.map((s) => `${s.key}${s.required ? '' : '?'}`).join(' > '), `${t.abandon_after_seconds} s`]);
        for (const l of table(['TEMPLATE', 'VERSION', 'TITLE', 'STEPS', 'ABANDON AFTER'], rows)) out.line(l);
      });
    });

  journeys
    .command('publish <key>')
    .description('publish a new version of a template from a JSON file (title, abandon_after_seconds, steps); running journeys keep theirs')
    .requiredOption('--file <path>', 'the template as JSON')
    .option('--json', 'print JSON')
    .action(async (key: string, _o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { file: string };
      let input: unknown;
      try {
        input = JSON.parse(readFileSync(o.file, 'utf8'));
      } catch (err) {
        throw new CliError(`--file ${o.file}: ${(err as Error).message}`);
      }
      await withContext(o, async ({ redis, namespace, out }) => {
        const t = await new JourneyStore(redis, namespace, 'cli').publishTemplate(key, input as never, 'cli');
        if (out.json) return out.document({ template: t });
        out.line(`Published ${t.key} v${t.version} (${t.steps.length} steps).`);
      });
    });

  journeys
    .command('list')
    .description("journeys, newest first (everyone's, or one user's)")
    .option('--user <id>', "only this user's")
    .addOption(new Option('--state <state>', 'only in this state').choices([...JOURNEY_STATES]))
    .option('--limit <n>', 'at most this many (default 50)', (v) => Number(v))
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { user?: string; state?: JourneyState; limit?: number };
      await withContext(o, async ({ redis, namespace, out }) => {
        const store = new JourneyStore(redis, namespace, 'cli');
        const docs = await store.list({ ...(o.user && { user: o.user }), ...(o.state && { state: o.state }), limit: o.limit ?? 50 });
        const views = await Promise.all(docs.map((d) => store.view(d)));
        if (out.json) return out.document({ journeys: views });
        const rows = views.map((v) => [v.id, `${v.template} v${v.template_version}`, v.user_id, v.state, `${v.progress_pct}%`, usd(v.cost.total.micros), v.started_at]);
        for (const l of table(['JOURNEY', 'TEMPLATE', 'USER', 'STATE', 'PROGRESS', 'COST', 'STARTED'], rows, [4, 5])) out.line(l);
      });
    });

  journeys
    .command('show <id>')
    .description('one journey: steps, progress, cost per step (from the ledger)')
    .option('--json', 'print JSON')
    .action(async (id: string, _o, cmd: Command) => {
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        const store = new JourneyStore(redis, namespace, 'cli');
        const found = await store.get(id);
        if (!found) throw new CliError(`No journey "${id}".`);
        const v = await store.view(found.doc);
        if (out.json) return out.document(v);
        printJourney(out, v);
      });
    });

  journeys
    .command('cancel <id>')
    .description('end an active journey (state cancelled)')
    .option('--json', 'print JSON')
    .action(async (id: string, _o, cmd: Command) => {
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        const store = new JourneyStore(redis, namespace, 'cli');
        const doc = await store.cancel(id, `cli:${process.pid}`);
        if (out.json) return out.document(await store.view(doc));
        out.line(`Cancelled ${id}.`);
      });
    });

  journeys
    .command('stats <template>')
    .description('per template version: started, completed, completion rate, conversion and drop-off per step, time in step, cost per completed journey')
    .option('--version <n>', 'the template version (default: latest)')
    .option('--json', 'print JSON')
    .action(async (template: string, _o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { version?: string };
      await withContext(o, async ({ redis, namespace, out }) => {
        const s = await new JourneyStore(redis, namespace, 'cli').stats(template, version(o.version));
        if (out.json) return out.document(s);
        printStats(out, s);
      });
    });
}
