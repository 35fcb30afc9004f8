import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table } from '../format';
import { buildPriceTable, isExternal, loadPriceTable, PriceStore, priceVersionInputSchema, SEED_PRICE_TABLE, selectPriceVersion, TollgateError } from '../shared';

interface SetOptions extends GlobalOptions {
  file: string;
}

/** The seed and this shell's PRICE_TABLE_FILE: what the services were started with, if they share it. */
function baseTable() {
  try {
    return loadPriceTable();
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

const rates = (p: Record<string, number | undefined>) =>
  Object.entries(p)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');

export function pricesCommands(prices: Command, globals: (cmd: Command) => GlobalOptions): void {
  prices
    .command('list')
    .description('price versions (seed, PRICE_TABLE_FILE, API) and the external operations in force')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd);
      await withContext(o, async ({ redis, namespace, out }) => {
        const base = baseTable();
        const stored = await new PriceStore(redis, namespace).versions();
        const all = buildPriceTable([...base.versions, ...stored]);
        const inForce = selectPriceVersion(all, new Date());
        const external = Object.entries(inForce.models).filter(([, p]) => isExternal(p));
        const source = (id: string) => (stored.some((v) => v.version === id) ? 'api' : SEED_PRICE_TABLE.versions.some((v) => v.version === id) ? 'seed' : 'file');
        if (out.json) return out.document({ in_force: inForce.version, versions: all.versions.map((v) => ({ version: v.version, effective_from: v.effective_from, source: source(v.version) })), external_operations: Object.fromEntries(external) });
        for (const l of table(['VERSION', 'EFFECTIVE FROM', 'SOURCE', 'PRICES', ''], all.versions.map((v) => [v.version, v.effective_from, source(v.version), String(Object.keys(v.models).length), v.version === inForce.version ? 'in force' : '']), [3])) out.line(l);
        out.line();
        for (const l of table(['EXTERNAL OPERATION', 'RATES (micros)'], external.map(([k, p]) => [k, rates({ ...p })]))) out.line(l);
      });
    });

  prices
    .command('set <version>')
    .description('add a price version (JSON: {effective_from, extends?, models}); applies no sooner than 60 s from now')
    .requiredOption('--file <path>', 'the version as JSON (- for stdin)')
    .option('--json', 'print JSON')
    .action(async (version: string, _o, cmd: Command) => {
      const o = globals(cmd) as SetOptions;
      let input;
      try {
        input = priceVersionInputSchema.parse(JSON.parse(readFileSync(o.file === '-' ? 0 : o.file, 'utf8')));
      } catch (err) {
        throw err instanceof SyntaxError ? new CliError(`--file: not JSON (${err.message})`) : err;
      }
      await withContext(o, async ({ redis, namespace, out }) => {
        try {
          const { version: v, created } = await new PriceStore(redis, namespace).put(version, input, baseTable());
          if (out.json) return out.document(v);
          out.line(`${created ? 'Added' : 'Replaced'} price version ${v.version}, in force from ${v.effective_from} (${Object.keys(v.models).length} prices); every service has it within 2 s.`);
        } catch (err) {
          throw err instanceof TollgateError ? new CliError(err.message) : err;
        }
      });
    });

  prices
    .command('delete <version>')
    .description('remove a version written through the API, before it applies')
    .action(async (version: string, _o, cmd: Command) => {
      const o = globals(cmd);
      await withContext(o, async ({ redis, namespace, out }) => {
        try {
          if (!(await new PriceStore(redis, namespace).remove(version))) throw new CliError(`No price version ${version} was written through the API.`);
        } catch (err) {
          throw err instanceof TollgateError ? new CliError(err.message) : err;
        }
        out.line(`Deleted price version ${version}.`);
      });
    });
}
