import type { Command } from 'commander';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table, usd } from '../format';
import { formatUsd, ResponseCache } from '../shared';

interface StatsOptions extends GlobalOptions {
  project?: string;
}

function projectOption(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(raw)) throw new CliError('--project: letters, digits, dot, dash or underscore (1-128)');
  return raw;
}

const ratio = (r: number | null) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);

export function cacheCommands(cache: Command, globals: (cmd: Command) => GlobalOptions): void {
  cache
    .command('stats')
    .description('hit ratio and money saved, per kind (chat answers, RAG context, vision)')
    .option('--project <id>', "only this project's cache")
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as StatsOptions;
      const project = projectOption(o.project);
      await withContext(o, async ({ redis, namespace, out }) => {
        const kinds = await new ResponseCache(redis, namespace).stats(project);
        const hits = kinds.reduce((n, k) => n + k.hits, 0);
        const misses = kinds.reduce((n, k) => n + k.misses, 0);
        const saved = kinds.reduce((n, k) => n + k.saved_micros, 0);
        const hitRatio = hits + misses === 0 ? null : hits / (hits + misses);
        if (out.json) return out.document({ scope: project ? { project_id: project } : 'all', hit_ratio: hitRatio, hits, misses, saved_micros: saved, saved_usd: formatUsd(saved), kinds });
        out.line(`Cache for ${project ? `project ${project}` : 'all projects'}: hit ratio ${out.paint('bold', ratio(hitRatio))}, saved ${out.paint('bold', usd(saved))}`);
        const rows = kinds.map((k) => [k.kind, String(k.hits), String(k.misses), String(k.refreshes), String(k.bypasses), ratio(k.hit_ratio), usd(k.saved_micros)]);
        for (const l of table(['KIND', 'HITS', 'MISSES', 'REFRESHES', 'BYPASSES', 'HIT RATIO', 'SAVED'], rows, [1, 2, 3, 4, 5, 6])) out.line(l);
      });
    });

  cache
    .command('purge')
    .description("delete every cached entry of a project (all its users and kinds)")
    .requiredOption('--project <id>', 'the project to purge')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as StatsOptions;
      const project = projectOption(o.project)!;
      await withContext(o, async ({ redis, namespace, out }) => {
        const purged = await new ResponseCache(redis, namespace).purge(project);
        if (out.json) return out.document({ project_id: project, purged_keys: purged });
        out.line(`Purged ${purged} cache ${purged === 1 ? 'key' : 'keys'} of project ${project}.`);
      });
    });
}
