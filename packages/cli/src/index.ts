import { Command, CommanderError } from 'commander';
import { alertsCommands } from './commands/alerts';
import { analyticsCommands } from './commands/analytics';
import { budgetsCommands } from './commands/budgets';
import { cacheCommands } from './commands/cache';
import { costsCommands } from './commands/costs';
import { eventsCommands } from './commands/events';
import { flagsCommands } from './commands/flags';
import { journeysCommands } from './commands/journeys';
import { keysCommands } from './commands/keys';
import { usageCommands } from './commands/usage';
import { pricesCommands } from './commands/prices';
import { version } from '../package.json';
import type { GlobalOptions } from './context';
import { CliError, oneLine } from './format';
import { TollgateError } from './shared';

const globals = (cmd: Command) => cmd.optsWithGlobals<GlobalOptions>();

/**
 * A command group (`keys`, `budgets`, ...) run without a subcommand or with an unknown one: one
 * line, like every other usage error, instead of commander's full help on stderr.
 */
function group(parent: Command, name: string, description: string): Command {
  const cmd = parent.command(name).description(description).usage('<command> [options]');
  cmd.argument('[command]').action((sub: string | undefined) => {
    const known = cmd.commands.map((c) => c.name()).join(', ');
    throw new CliError(
      sub === undefined
        ? `Missing command: tollgate ${name} ${known.replace(/, /g, '|')} (see tollgate ${name} --help).`
        : `Unknown command "${name} ${sub}": expected one of ${known}.`,
    );
  });
  return cmd;
}

export function buildProgram(): Command {
  const program = new Command('tollgate')
    .description('Operate Tollgate from a terminal: API keys, budgets, costs, alerts, events, analytics, journeys, the cache and feature flags, straight from Redis.')
    .usage('<command> [options]')
    .version(version, '-V, --version')
    .option('--redis-url <url>', 'Redis to use (default $REDIS_URL, else redis://127.0.0.1:6379)')
    .option('--prefix <prefix>', 'key prefix the services run with (default $TOLLGATE_PREFIX, else tollgate)')
    .option('--no-color', 'plain output even on a terminal (NO_COLOR works too)')
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`${oneLine(str)}\n`) });

  keysCommands(group(program, 'keys', 'API keys: create, list, revoke'), globals);
  budgetsCommands(group(program, 'budgets', 'budgets per scope and period: set, list'), globals);
  costsCommands(group(program, 'costs', 'spend from the ledger: summary'), globals);
  alertsCommands(group(program, 'alerts', 'budget and ops alerts: tail'), globals);
  eventsCommands(group(program, 'events', 'the event bus: tail, replay'), globals);
  cacheCommands(group(program, 'cache', 'the response cache: stats, purge'), globals);
  flagsCommands(group(program, 'flags', 'feature flags: list, get, set, enable, disable, import, history'), globals);
  pricesCommands(group(program, 'prices', 'the versioned price table: list, set, delete'), globals);
  usageCommands(group(program, 'usage', 'metered external calls, through the gateway: hold, report, release'), globals);
  analyticsCommands(group(program, 'analytics', 'latency, errors, cost and conversion from the rollups: overview, query, funnel'), globals);
  journeysCommands(group(program, 'journeys', 'journey templates and journeys: templates, publish, list, show, cancel, stats'), globals);

  return program;
}

/** The message an operator sees for a failure: what went wrong, never a stack (TOLLGATE_DEBUG=1 shows it). */
function describeError(err: unknown): string {
  if (err instanceof CliError || err instanceof TollgateError) return err.message;
  if (err instanceof Error && err.name === 'ZodError') {
    const issues = (err as Error & { issues: Array<{ path: PropertyKey[]; message: string }> }).issues;
    return issues.map((i) => `${i.path.map(String).join('.') || 'input'}: ${i.message}`).join('; ');
  }
  if (err instanceof Error) return `${err.message}${/redis|connection|ECONN/i.test(err.message) ? ' (is Redis reachable?)' : ''}`;
  return String(err);
}

export async function main(argv: string[] = process.argv): Promise<number> {
  // A closed pipe (`tollgate events replay ... | head`) ends the command quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
  });
  try {
    const program = buildProgram();
    if (argv.length <= 2) {
      // Bare `tollgate`: the overview, like git, and a non-zero exit because nothing was done.
      program.outputHelp();
      return 1;
    }
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    // Commander has already printed its (one-line) message, or the help/version text.
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`error: ${oneLine(describeError(err))}\n`);
    if (process.env.TOLLGATE_DEBUG && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = code;
  });
}
