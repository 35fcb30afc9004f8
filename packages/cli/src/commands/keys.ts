import type { Command } from 'commander';
import { parseList } from '../args';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table } from '../format';
import { ApiKeyStore, KEY_SCOPES, type KeyScope, newKeySchema } from '../shared';

const FLAG_OF: Record<string, string> = { user_id: '--user', project_id: '--project', scopes: '--scopes', name: '--name' };

interface CreateOptions extends GlobalOptions {
  user: string;
  project: string;
  scopes?: KeyScope[];
  name?: string;
}

export function keysCommands(keys: Command, globals: (cmd: Command) => GlobalOptions): void {
  keys
    .command('create')
    .description('create an API key; the key is printed once and only its hash is stored')
    .requiredOption('--user <id>', 'user the key acts for')
    .requiredOption('--project <id>', 'project the key bills to')
    .option('--scopes <list>', `comma-separated: ${KEY_SCOPES.join(', ')} (default chat,vision,costs)`, parseList(KEY_SCOPES, 'scope'))
    .option('--name <name>', 'a label for the key')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as CreateOptions;
      // The gateway's own schema, checked before connecting so a typo costs no round trip.
      const spec = newKeySchema.safeParse({ user_id: o.user, project_id: o.project, ...(o.scopes && { scopes: o.scopes }), ...(o.name !== undefined && { name: o.name }) });
      if (!spec.success) {
        const issue = spec.error.issues[0]!;
        throw new CliError(`${FLAG_OF[String(issue.path[0])] ?? String(issue.path[0])}: ${issue.message}`);
      }
      await withContext(o, async ({ redis, namespace, out }) => {
        const { key, record } = await new ApiKeyStore(redis, namespace).create(spec.data);
        if (out.json) return out.document({ key, ...record });
        out.line(`Created ${record.key_id} "${record.name}" for user ${record.user_id}, project ${record.project_id}, scopes ${record.scopes.join(',')}.`);
        out.line(`Key (shown once, store it now): ${out.paint('bold', key)}`);
      });
    });

  keys
    .command('list')
    .description('list API keys (records only: keys are never stored)')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        const records = (await new ApiKeyStore(redis, namespace).list()).sort((a, b) => a.created_at.localeCompare(b.created_at) || a.key_id.localeCompare(b.key_id));
        if (out.json) return out.document({ keys: records });
        if (records.length === 0) return out.line('No API keys.');
        const rows = records.map((r) => [r.key_id, r.name, r.user_id, r.project_id, r.scopes.join(','), r.created_at]);
        for (const l of table(['KEY ID', 'NAME', 'USER', 'PROJECT', 'SCOPES', 'CREATED'], rows)) out.line(l);
      });
    });

  keys
    .command('revoke')
    .description('revoke an API key: it stops working at once, on every gateway')
    .argument('<key_id>', 'the key_id shown by create and list')
    .option('--json', 'print JSON')
    .action(async (keyId: string, _o, cmd: Command) => {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(keyId)) throw new CliError(`"${keyId}" is not a key id (they look like key_0123abcd...).`);
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        if (!(await new ApiKeyStore(redis, namespace).revoke(keyId))) throw new CliError(`No API key with id ${keyId}.`);
        if (out.json) return out.document({ key_id: keyId, revoked: true });
        out.line(`Revoked ${keyId}.`);
      });
    });
}
