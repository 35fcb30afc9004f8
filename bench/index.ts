/**
 * `pnpm bench [name...]`: runs the named benchmarks (all when none is named) and prints their
 * tables. Benchmarks talk only to loopback services and stop by themselves.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SummaryRow } from './summary';

const BENCHES: Record<string, () => Promise<{ run: () => Promise<SummaryRow[]> }>> = {
  ledger: () => import('./ledger'),
  alerts: () => import('./alerts'),
  gateway: () => import('./gateway'),
  budget: () => import('./budget'),
  cache: () => import('./cache'),
  flags: () => import('./flags'),
  analytics: () => import('./analytics'),
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((n) => !(n in BENCHES));
  if (unknown.length) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
    process.exit(2);
  }
  const summary: SummaryRow[] = [];
  for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
    console.log(`\n== bench ${name}`);
    summary.push(...(await (await BENCHES[name]!()).run()));
  }
  // Every benchmark's headline against its target, in one table and in bench/results/summary.json.
  console.log('\n== summary');
  console.table(summary.map((r) => ({ ...r, met: r.met === null ? '' : r.met ? 'yes' : 'NO' })));
  mkdirSync(join(__dirname, 'results'), { recursive: true });
  writeFileSync(join(__dirname, 'results', 'summary.json'), JSON.stringify({ at: new Date().toISOString(), summary }, null, 2));
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    console.error(`bench failed: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(1);
  },
);
