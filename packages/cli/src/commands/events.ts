import { type Command, Option } from 'commander';
import { parseInstant, parsePositiveInt, parseTypePatterns } from '../args';
import { type GlobalOptions, withContext } from '../context';
import { CliError, type Output, truncate } from '../format';
import { type AnyEvent, EventBus, EventTail } from '../shared';

interface ReplayOptions extends GlobalOptions {
  since: Date;
  until?: Date;
  type?: string[];
  limit: number;
}

interface TailOptions extends GlobalOptions {
  type?: string[];
}

function typeColor(type: string): Parameters<Output['paint']>[0] | null {
  if (type.endsWith('.failed') || type === 'error.occurred' || type === 'circuit.opened') return 'red';
  if (type === 'cost.threshold_exceeded') return 'yellow';
  if (type.endsWith('.completed') || type === 'circuit.closed') return 'green';
  if (type.startsWith('usage.') || type.startsWith('cost.')) return 'cyan';
  return null;
}

/** Time, type, source, correlation id, who, then the data (cut short; --json has all of it). */
export function eventLine(out: Output, event: AnyEvent): string {
  const color = typeColor(event.type);
  const who = [event.user_id && `user=${event.user_id}`, event.project_id && `project=${event.project_id}`].filter(Boolean).join(' ');
  return [
    out.paint('dim', event.occurred_at),
    color ? out.paint(color, event.type.padEnd(24)) : event.type.padEnd(24),
    event.source,
    `corr=${event.correlation_id}`,
    ...(who ? [who] : []),
    out.paint('dim', truncate(JSON.stringify(event.data), 200)),
  ].join('  ');
}

const TYPE_HELP = "event types, comma-separated; '*' stands for one segment (workflow.*, *.failed)";

export function eventsCommands(events: Command, globals: (cmd: Command) => GlobalOptions): void {
  events
    .command('replay')
    .description('print the events the bus still holds from a point in time, oldest first')
    .addOption(new Option('--since <time>', 'start: -15m, -2h, -1d, an ISO date(-time) or epoch ms').argParser(parseInstant()).makeOptionMandatory())
    .option('--until <time>', 'end (default now), same forms as --since', parseInstant())
    .option('--type <patterns>', TYPE_HELP, parseTypePatterns)
    .option('--limit <n>', 'at most this many events', parsePositiveInt(100_000), 1_000)
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as ReplayOptions;
      if (o.until && o.until.getTime() < o.since.getTime()) throw new CliError('--until is before --since.');
      await withContext(o, async ({ redis, namespace, busPartitions, out }) => {
        const bus = new EventBus({ redis, prefix: namespace, partitions: busPartitions, service: 'tollgate-cli' });
        // One more than asked: tells whether the limit cut the history short.
        const found = await bus.history({ since: o.since, ...(o.until && { until: o.until }), ...(o.type && { types: o.type }), limit: o.limit + 1 });
        const truncated = found.length > o.limit;
        const shown = found.slice(0, o.limit);
        if (out.json) return out.document({ events: shown.map((e) => ({ stream_id: e.streamId, event: e.event })), count: shown.length, truncated });
        if (shown.length === 0) out.line(`No events${o.type ? ` of type ${o.type.join(', ')}` : ''} since ${o.since.toISOString()}.`);
        for (const { event } of shown) out.line(eventLine(out, event));
        if (truncated) process.stderr.write(`Stopped at --limit ${o.limit}: more events follow (raise --limit or move --since).\n`);
      });
    });

  events
    .command('tail')
    .description('follow events as they are published (Ctrl-C stops)')
    .option('--type <patterns>', TYPE_HELP, parseTypePatterns)
    .option('--json', 'print one JSON object per line')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as TailOptions;
      await withContext(
        o,
        async ({ redis, namespace, busPartitions, out, stopped }) => {
          const tail = new EventTail({ redis, prefix: namespace, partitions: busPartitions, ...(o.type && { types: o.type }) }, (event, streamId) => {
            if (out.json) out.jsonLine({ stream_id: streamId, event });
            else out.line(eventLine(out, event));
          });
          await tail.start();
          // On stderr, once the start position is fixed: nothing published after this line is missed.
          process.stderr.write(`Following events${o.type ? ` of type ${o.type.join(', ')}` : ''}; Ctrl-C stops.\n`);
          await stopped;
          await tail.stop();
        },
        true,
      );
    });
}
