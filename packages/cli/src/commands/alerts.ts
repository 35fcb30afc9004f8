import type { Command } from 'commander';
import { type GlobalOptions, withContext } from '../context';
import { type Output, usd } from '../format';
import { type AlertRecord, alertingKeys, parseAlertEntry } from '../shared';

type StreamReply = Array<[string, Array<[string, string[] | null]>]> | null;

interface TailOptions extends GlobalOptions {
  fromStart?: boolean;
}

/** One line per alert notice: red for a used-up budget or an ops alert, yellow for a warning, green when resolved. */
export function alertLine(out: Output, alert: AlertRecord): string {
  const at = alert.state === 'resolved' ? (alert.resolved_at ?? alert.fired_at) : alert.fired_at;
  const severe = alert.kind === 'ops' || alert.threshold_pct >= 100;
  const state =
    alert.state === 'resolved' ? out.paint('green', 'RESOLVED') : severe ? out.paint(['bold', 'red'], 'FIRING  ') : out.paint(['bold', 'yellow'], 'FIRING  ');
  const label = alert.kind === 'cost' ? `${alert.scope}${alert.scope === 'global' ? '' : ` ${alert.scope_id}`} ${alert.period} ${alert.threshold_pct}%${alert.hard ? ' hard' : ''}` : `ops ${alert.alert}`;
  const top =
    alert.kind === 'cost' && alert.state === 'firing' && alert.top_contributors.length
      ? out.paint('dim', ` [top: ${alert.top_contributors.slice(0, 3).map((c) => `${c.dimension} ${c.key} ${usd(c.micros)}`).join(', ')}]`)
      : '';
  return `${out.paint('dim', at)}  ${state}  ${out.paint('cyan', label)}  ${alert.summary}${top}`;
}

export function alertsCommands(alerts: Command, globals: (cmd: Command) => GlobalOptions): void {
  alerts
    .command('tail')
    .description('follow budget and ops alerts as the alerting service records them (Ctrl-C stops)')
    .option('--from-start', 'first print the alerts the stream still holds')
    .option('--json', 'print one JSON object per line')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as TailOptions;
      await withContext(
        o,
        async ({ redis, namespace, out, stopped }) => {
          const stream = alertingKeys(namespace).alertsStream;
          let cursor = '0-0';
          if (!o.fromStart) {
            const [newest] = (await redis.xrevrange(stream, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
            cursor = newest?.[0] ?? '0-0';
          }
          // XREAD BLOCK holds its connection: read on a duplicate, and drop it to stop at once.
          const reader = redis.duplicate();
          reader.on('error', () => undefined);
          let running = true;
          void stopped.then(() => {
            running = false;
            reader.disconnect();
          });
          // On stderr, once the start position is fixed: nothing recorded after this line is missed.
          process.stderr.write(`Following alerts${o.fromStart ? ' from the start of the stream' : ''}; Ctrl-C stops.\n`);
          while (running) {
            let reply: StreamReply;
            try {
              reply = (await reader.xread('COUNT', 100, 'BLOCK', 2_000, 'STREAMS', stream, cursor)) as StreamReply;
            } catch {
              if (!running) break;
              await new Promise((r) => setTimeout(r, 500));
              continue;
            }
            for (const [, entries] of reply ?? []) {
              for (const [id, fields] of entries) {
                cursor = id;
                const entry = parseAlertEntry(id, fields);
                if (!entry) continue;
                if (out.json) out.jsonLine({ stream_id: id, alert: entry.alert });
                else out.line(alertLine(out, entry.alert));
              }
            }
          }
        },
        true,
      );
    });
}
