import { createRedis, mastersOf } from '../packages/shared/src';

type Redis = ReturnType<typeof createRedis>;

/**
 * BENCH_KEY_FAMILIES=<seconds>: during the first Tollgate run, MONITOR every master for that long
 * and count the commands (those scripts run included) by the key family they touch: `ledger`,
 * `budget`, `q` (BullMQ), `bus`... Shows which part of the system a Redis shard spends its work
 * on. MONITOR slows Redis down, so the run's own figures are not comparable to one without it.
 * `per entry` divides by the ledger entries written meanwhile (the ledger script's SET of each
 * entry key): every chat request bills one provider call, so it reads as commands per request.
 */
export async function keyFamilies(
  redis: Redis,
  ns: string,
  seconds: number,
): Promise<Array<{ family: string; commands: number; '%': number; 'per entry': number }>> {
  await redis.ping();
  const tag = ns.replace(/^\{|\}$/g, '');
  const counts = new Map<string, number>();
  const entryKey = `${ns}:ledger:entry:`;
  let entries = 0;
  const monitors = await Promise.all(
    mastersOf(redis).map(async (node) => {
      const m = await createRedis(`redis://${node.options.host}:${node.options.port}`, { nodes: null }).monitor();
      m.on('monitor', (_time: string, args: string[]) => {
        const key = args.find((a) => a.startsWith(`{${tag}`));
        if (!key) return;
        if (args[0]?.toLowerCase() === 'set' && key.startsWith(entryKey)) entries++;
        // `{ns}:ledger:...` -> ledger; `{ns:bus:3:k}:bus` -> bus (a unit's slot: its kind).
        const unit = /^\{[^}]*?:([a-z]+)[^}]*\}/.exec(key.slice(0, key.indexOf('}') + 1).replace(`{${tag}`, '{x'));
        const family = unit?.[1] ?? key.slice(key.indexOf('}') + 2).split(':')[0] ?? '?';
        counts.set(family, (counts.get(family) ?? 0) + 1);
      });
      return m;
    }),
  );
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const m of monitors) m.disconnect();
  const total = Math.max(1, [...counts.values()].reduce((a, b) => a + b, 0));
  const perEntry = (n: number) => (entries > 0 ? Number((n / entries).toFixed(1)) : NaN);
  const rows = [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([family, commands]) => ({ family, commands, '%': Number(((100 * commands) / total).toFixed(1)), 'per entry': perEntry(commands) }));
  rows.push({ family: `all (${entries} entries)`, commands: total, '%': 100, 'per entry': perEntry(total) });
  return rows;
}
