import { type Command, InvalidArgumentError } from 'commander';
import { TollgateUsageError, UsageClient } from '@tollgate/usage-client';
import type { GlobalOptions } from '../context';
import { CliError, colorEnabled, Output, usd } from '../format';

/**
 * External usage goes through the gateway, not Redis: a hold must pass the same admission (key,
 * scope, rate limit, hard budgets) as every other paid call.
 */
interface UsageOptions extends GlobalOptions {
  url?: string;
  key?: string;
  calls?: number;
  ttl?: number;
  hold?: string;
  idempotencyKey?: string;
}

function count(raw: string): number {
  if (!/^\d{1,10}$/.test(raw.trim())) throw new InvalidArgumentError('Expected a whole number.');
  return Number(raw);
}

function clientFor(o: UsageOptions, env: NodeJS.ProcessEnv = process.env): UsageClient {
  const baseUrl = o.url ?? env.TOLLGATE_URL ?? 'http://127.0.0.1:8080';
  const apiKey = o.key ?? env.TOLLGATE_KEY;
  if (!apiKey) throw new CliError('A key with the "usage" scope is needed: set --key or TOLLGATE_KEY.');
  return new UsageClient({ baseUrl, apiKey });
}

async function run(o: UsageOptions, body: (client: UsageClient, out: Output) => Promise<void>): Promise<void> {
  const out = new Output(o.json === true, colorEnabled(process.stdout, process.env, o.color !== false));
  try {
    await body(clientFor(o), out);
  } catch (err) {
    if (err instanceof TollgateUsageError) {
      const b = err.budget;
      const figures = b && b.limit_micros !== undefined ? ` (${b.scope} ${b.scope_id} ${b.period}: spent ${usd(Number(b.spent_micros))}, held ${usd(Number(b.held_micros))}, limit ${usd(Number(b.limit_micros))}, this call ${usd(Number(b.request_worst_case_micros))})` : '';
      throw new CliError(`${err.status} ${err.code}: ${err.message}${figures}`);
    }
    if (err instanceof TypeError) throw new CliError(`Cannot reach the gateway (${err.message}); set --url or TOLLGATE_URL.`);
    throw err;
  }
}

const common = (c: Command) =>
  c
    .option('--url <url>', 'the gateway (default $TOLLGATE_URL, else http://127.0.0.1:8080)')
    .option('--key <key>', 'an API key with the usage scope (default $TOLLGATE_KEY)')
    .option('--json', 'print JSON');

export function usageCommands(usage: Command, globals: (cmd: Command) => GlobalOptions): void {
  common(
    usage
      .command('hold <operation> <units>')
      .description("hold the worst case of an external call on the key's hard budgets (402 when it does not fit)")
      .option('--calls <n>', 'calls the hold covers (default 1)', count)
      .option('--ttl <seconds>', 'how long the hold lasts unsettled (default 300, at most 3600)', count),
  ).action(async (operation: string, units: string, _o, cmd: Command) => {
    const o = globals(cmd) as UsageOptions;
    await run(o, async (client, out) => {
      const h = await client.hold(operation, count(units), { ...(o.calls !== undefined && { calls: o.calls }), ...(o.ttl !== undefined && { ttlSeconds: o.ttl }) });
      if (out.json) return out.document(h);
      out.line(`Held ${out.paint('bold', usd(h.worst_micros))} for ${h.operation} (${h.units} units, ${h.calls} call${h.calls === 1 ? '' : 's'})${h.held ? '' : ' (nothing reserved: no hard budget covers this key, or the worst case is 0)'} until ${h.expires_at}.`);
      out.line(`Hold id: ${h.hold_id}`);
    });
  });

  common(
    usage
      .command('report <operation> <units>')
      .description('record what an external call used; with --hold it settles that hold (a retry counts once)')
      .option('--hold <id>', 'the hold this call was made under')
      .option('--calls <n>', 'calls made (default 1)', count)
      .option('--idempotency-key <key>', 'makes a retried report count once without a hold'),
  ).action(async (operation: string, units: string, _o, cmd: Command) => {
    const o = globals(cmd) as UsageOptions;
    await run(o, async (client, out) => {
      const r = await client.report(operation, count(units), {
        ...(o.hold !== undefined && { holdId: o.hold }),
        ...(o.calls !== undefined && { calls: o.calls }),
        ...(o.idempotencyKey !== undefined && { idempotencyKey: o.idempotencyKey }),
      });
      if (out.json) return out.document(r);
      out.line(`Recorded ${r.operation}: ${r.units} units, ${usd(r.cost.micros)} at price version ${r.cost.price_version}${r.hold_id ? ` (hold ${r.hold_id}: ${r.hold})` : ''}; event ${r.usage_event_id}.`);
    });
  });

  common(usage.command('release <hold-id>').description('give an unused hold back at once')).action(async (holdId: string, _o, cmd: Command) => {
    const o = globals(cmd) as UsageOptions;
    await run(o, async (client, out) => {
      await client.release(holdId);
      if (out.json) return out.document({ released: holdId });
      out.line(`Released hold ${holdId}.`);
    });
  });
}
