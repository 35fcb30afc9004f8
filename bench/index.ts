/**
 * `pnpm bench [name...]`: runs the named benchmarks (all when none is named) and prints their
 * tables. Benchmarks talk only to loopback services and stop by themselves.
 */
const BENCHES: Record<string, () => Promise<{ run: () => Promise<void> }>> = {
  ledger: () => import('./ledger'),
  alerts: () => import('./alerts'),
  gateway: () => import('./gateway'),
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((n) => !(n in BENCHES));
  if (unknown.length) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
    process.exit(2);
  }
  for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
    console.log(`\n== bench ${name}`);
    await (await BENCHES[name]!()).run();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench failed: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(1);
  },
);
