import { connect } from 'node:net';
import { createRedis, mastersOf } from '../packages/shared/src';

type Redis = ReturnType<typeof createRedis>;

const resp = (...args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/** The arguments of one MONITOR line: `+<time> [<db> <client>] "arg" "arg"...`, quoted as sdscatrepr does. */
function monitorArgs(line: string): string[] {
  const args: string[] = [];
  let i = line.indexOf('] ');
  if (i < 0) return args;
  for (i += 2; i < line.length; i++) {
    if (line[i] !== '"') continue;
    let arg = '';
    for (i++; i < line.length && line[i] !== '"'; i++) {
      if (line[i] !== '\\') {
        arg += line[i];
        continue;
      }
      const c = line[++i];
      if (c === 'x') {
        arg += String.fromCharCode(parseInt(line.slice(i + 1, i + 3), 16));
        i += 2;
      } else arg += c === 'n' ? '\n' : c === 'r' ? '\r' : c === 't' ? '\t' : (c ?? '');
    }
    args.push(arg);
  }
  return args;
}

/**
 * MONITOR on a plain socket: ioredis' monitor() mode switches only after the OK is parsed, and
 * under load the first lines arrive in the same read and crash the process ("Command queue state
 * error"), leaving the bench's services running.
 */
function monitor(node: Redis, onCommand: (args: string[]) => void): () => void {
  const socket = connect(Number(node.options.port), node.options.host ?? '127.0.0.1');
  socket.setEncoding('latin1');
  if (node.options.password) socket.write(node.options.username ? resp('AUTH', node.options.username, node.options.password) : resp('AUTH', node.options.password));
  socket.write(resp('MONITOR'));
  let buffered = '';
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (line.startsWith('+') && line !== '+OK') onCommand(monitorArgs(line));
    }
  });
  socket.on('error', () => undefined);
  return () => socket.destroy();
}

/**
 * BENCH_KEY_FAMILIES=<seconds>: during the first Tollgate run, MONITOR every master for that long
 * and count the commands (those scripts run included) by the key family they touch: `ledger`,
 * `budget`, `q` (BullMQ), `bus`... Shows which part of the system a Redis shard spends its work
 * on. MONITOR slows Redis down, so the run's own figures are not comparable to one without it.
 * `per entry` divides by the ledger entries written meanwhile (the ledger script's SET of each
 * entry key): every chat request bills one provider call, so it reads as commands per request.
 */
const DETAIL = process.env.BENCH_KEY_FAMILY_DETAIL === '1';

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
  const monitors = mastersOf(redis).map((node) =>
    monitor(node, (args) => {
      const key = args.find((a) => a.startsWith(`{${tag}`));
      if (!key) return;
      if (args[0]?.toLowerCase() === 'set' && key.startsWith(entryKey)) entries++;
      // `{ns}:ledger:...` -> ledger; `{ns:bus:3:k}:bus` -> bus (a unit's slot: its kind).
      const unit = /^\{[^}]*?:([a-z]+)[^}]*\}/.exec(key.slice(0, key.indexOf('}') + 1).replace(`{${tag}`, '{x'));
      const rest = key.slice(key.indexOf('}') + 2).split(':');
      // BENCH_KEY_FAMILY_DETAIL=1: the whole key shape, parts holding a digit (ids, dates) as '*'.
      const family = DETAIL ? `${unit?.[1] ?? '-'}:${rest.map((part) => (/\d/.test(part) ? '*' : part)).join(':')}` : (unit?.[1] ?? rest[0] ?? '?');
      counts.set(family, (counts.get(family) ?? 0) + 1);
    }),
  );
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const stop of monitors) stop();
  const total = Math.max(1, [...counts.values()].reduce((a, b) => a + b, 0));
  const perEntry = (n: number) => (entries > 0 ? Number((n / entries).toFixed(1)) : NaN);
  const rows = [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([family, commands]) => ({ family, commands, '%': Number(((100 * commands) / total).toFixed(1)), 'per entry': perEntry(commands) }));
  rows.push({ family: `all (${entries} entries)`, commands: total, '%': 100, 'per entry': perEntry(total) });
  return rows;
}
