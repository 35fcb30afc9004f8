import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { parseList, parsePositiveInt } from '../args';
import { type GlobalOptions, withContext } from '../context';
import { CliError, table, truncate } from '../format';
import {
  clientFeaturesSchema,
  EventBus,
  featureSchema,
  FLAG_TYPE_NAMES,
  FlagInputError,
  flagNameSchema,
  FlagStore,
  type FlagType,
  flagView,
  flagWarnings,
  importEdit,
  prepareFeature,
  publishFlagChanges,
  type StoredFlag,
} from '../shared';

interface SetOptions extends GlobalOptions {
  file?: string;
  type?: FlagType[];
  description?: string;
  on?: boolean;
  off?: boolean;
}

const actor = () => {
  try {
    return `cli:${userInfo().username}`.slice(0, 128);
  } catch {
    return 'cli';
  }
};

/** A JSON document from a file, or from stdin for `-`. */
function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    throw new CliError(`Cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}.`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${path} is not valid JSON.`);
  }
}

function checkName(name: string): string {
  const r = flagNameSchema.safeParse(name);
  if (!r.success) throw new CliError(`"${name}" is not a flag name: ${r.error.issues[0]!.message}.`);
  return name;
}

function summary(f: StoredFlag): string {
  const s = f.strategies.map((x) => (x.name === 'flexibleRollout' ? `flexibleRollout ${String(x.parameters.rollout ?? '?')}%` : x.name));
  return s.join(', ') || '(on for all)';
}

export function flagsCommands(flags: Command, globals: (cmd: Command) => GlobalOptions): void {
  flags
    .command('list')
    .description('list feature flags: type, on/off, strategies, variants, stale')
    .option('--stale', 'only flags past their type\'s expected lifetime (or marked stale)')
    .option('--json', 'print JSON')
    .action(async (_o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { stale?: boolean };
      await withContext(o, async ({ redis, namespace, out }) => {
        const state = await new FlagStore(redis, namespace).load();
        let views = state.flags.map((f) => flagView(f)).sort((a, b) => a.name.localeCompare(b.name));
        if (o.stale) views = views.filter((f) => f.stale);
        if (out.json) return out.document({ version: state.version, flags: views, segments: state.segments });
        if (!views.length) return out.line(o.stale ? 'No stale flags.' : 'No flags.');
        const rows = views.map((f) => [
          f.name,
          f.type,
          f.enabled ? out.paint('green', 'on') : out.paint('dim', 'off'),
          truncate(summary(f), 40),
          f.variants.map((v) => `${v.name}:${v.weight / 10}%`).join(' ') || '-',
          f.stale ? out.paint('yellow', 'stale') : '',
          `${f.meta.updated_at.slice(0, 19)}Z ${f.meta.updated_by}`,
        ]);
        for (const l of table(['NAME', 'TYPE', 'STATE', 'STRATEGIES', 'VARIANTS', 'STALE', 'UPDATED'], rows)) out.line(l);
      });
    });

  flags
    .command('get')
    .description('print one flag as stored (Unleash feature JSON plus who changed it last)')
    .argument('<name>')
    .action(async (name: string, _o, cmd: Command) => {
      await withContext(globals(cmd), async ({ redis, namespace, out }) => {
        const f = await new FlagStore(redis, namespace).get(checkName(name));
        if (!f) throw new CliError(`No flag named "${name}".`);
        out.document(flagView(f));
      });
    });

  flags
    .command('set')
    .description('create or replace a flag: from an Unleash feature JSON (--file, - for stdin), or a simple on/off flag')
    .argument('<name>')
    .option('--file <path>', 'the feature as Unleash JSON (strategies, variants, constraints...)')
    .option('--type <type>', `one of ${FLAG_TYPE_NAMES.join(', ')}`, parseList(FLAG_TYPE_NAMES, 'flag type'))
    .option('--description <text>')
    .option('--on', 'enabled')
    .option('--off', 'disabled (the default for a new flag)')
    .option('--json', 'print JSON')
    .action(async (name: string, _o, cmd: Command) => {
      const o = globals(cmd) as SetOptions;
      checkName(name);
      if (o.on && o.off) throw new CliError('Give --on or --off, not both.');
      if (o.type && o.type.length !== 1) throw new CliError('--type takes one type.');
      await withContext(o, async ({ redis, namespace, busPartitions, out }) => {
        const store = new FlagStore(redis, namespace);
        const existing = await store.get(name);
        const base: Record<string, unknown> = o.file
          ? (readJson(o.file) as Record<string, unknown>)
          : existing
            ? (({ meta: _m, ...rest }) => rest)(existing)
            : { enabled: false, strategies: [{ name: 'default' }] };
        const parsed = featureSchema.omit({ name: true }).extend({ name: featureSchema.shape.name.optional() }).safeParse({
          ...base,
          ...(o.type && { type: o.type[0] }),
          ...(o.description !== undefined && { description: o.description }),
          ...(o.on && { enabled: true }),
          ...(o.off && { enabled: false }),
        });
        if (!parsed.success) {
          const i = parsed.error.issues[0]!;
          throw new CliError(`${i.path.map(String).join('.') || 'flag'}: ${i.message}`);
        }
        let feature;
        try {
          feature = prepareFeature(name, parsed.data);
        } catch (err) {
          if (err instanceof FlagInputError) throw new CliError(err.message);
          throw err;
        }
        const who = actor();
        const state = await store.load();
        const result = await store.apply(who, () => ({ put: [feature] }));
        await publishFlagChanges(new EventBus({ redis, prefix: namespace, partitions: busPartitions, service: 'tollgate-cli' }), result, who);
        const warnings = flagWarnings([feature], state);
        if (out.json) return out.document({ flag: flagView((await store.get(name))!), version: result.version, changed: result.changes.length > 0, warnings });
        out.line(result.changes.length ? `${existing ? 'Updated' : 'Created'} ${name} (${feature.enabled ? 'on' : 'off'}), version ${result.version}.` : `${name} is unchanged.`);
        for (const w of warnings) out.line(out.paint('yellow', `warning: ${w}`));
      });
    });

  for (const [verb, enabled] of [['enable', true], ['disable', false]] as const) {
    flags
      .command(verb)
      .description(`${verb === 'enable' ? 'turn a flag on' : 'turn a flag off'}: every service follows within a second`)
      .argument('<name>')
      .option('--json', 'print JSON')
      .action(async (name: string, _o, cmd: Command) => {
        checkName(name);
        await withContext(globals(cmd), async ({ redis, namespace, busPartitions, out }) => {
          const store = new FlagStore(redis, namespace);
          let found = false;
          const who = actor();
          const result = await store.apply(who, (current) => {
            const f = current.flags.find((x) => x.name === name);
            found = f !== undefined;
            if (!f) return {};
            const { meta: _m, ...feature } = f;
            return { put: [{ ...feature, enabled }] };
          });
          if (!found) throw new CliError(`No flag named "${name}".`);
          await publishFlagChanges(new EventBus({ redis, prefix: namespace, partitions: busPartitions, service: 'tollgate-cli' }), result, who);
          if (out.json) return out.document({ name, enabled, version: result.version, changed: result.changes.length > 0 });
          out.line(result.changes.length ? `${name} is now ${enabled ? 'on' : 'off'} (version ${result.version}).` : `${name} was already ${enabled ? 'on' : 'off'}.`);
        });
      });
  }

  flags
    .command('import')
    .description('import an Unleash client-features document {version, features, segments} (- for stdin)')
    .argument('<file>')
    .option('--replace', 'remove the flags and segments the document does not name')
    .option('--json', 'print JSON')
    .action(async (file: string, _o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { replace?: boolean };
      const parsed = clientFeaturesSchema.safeParse(readJson(file));
      if (!parsed.success) {
        const i = parsed.error.issues[0]!;
        throw new CliError(`${file}: ${i.path.map(String).join('.') || 'document'}: ${i.message}`);
      }
      const doc = parsed.data;
      const dup = doc.features.find((f, i) => doc.features.findIndex((g) => g.name === f.name) !== i);
      if (dup) throw new CliError(`${file} names the flag "${dup.name}" twice.`);
      await withContext(o, async ({ redis, namespace, busPartitions, out }) => {
        const store = new FlagStore(redis, namespace);
        const who = actor();
        const state = await store.load();
        const result = await store.apply(who, importEdit(doc, o.replace === true));
        await publishFlagChanges(new EventBus({ redis, prefix: namespace, partitions: busPartitions, service: 'tollgate-cli' }), result, who);
        const known = o.replace ? { flags: [], segments: doc.segments } : { flags: state.flags, segments: [...state.segments, ...doc.segments] };
        const warnings = flagWarnings(doc.features, known);
        const count = (a: string) => result.changes.filter((c) => c.kind === 'flag' && c.action === a).length;
        if (out.json) return out.document({ version: result.version, created: count('created'), updated: count('updated'), deleted: count('deleted'), changes: result.changes.map((c) => ({ name: c.name, kind: c.kind, action: c.action })), warnings });
        out.line(`Imported ${doc.features.length} flags: ${count('created')} created, ${count('updated')} updated, ${count('deleted')} deleted; version ${result.version}.`);
        for (const w of warnings) out.line(out.paint('yellow', `warning: ${w}`));
      });
    });

  flags
    .command('history')
    .description('recent flag changes, newest first: who, when, what changed')
    .argument('[name]', 'one flag only')
    .option('--limit <n>', 'at most this many (default 20)', parsePositiveInt(1000), 20)
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, _o, cmd: Command) => {
      const o = globals(cmd) as GlobalOptions & { limit: number };
      await withContext(o, async ({ redis, namespace, out }) => {
        const changes = await new FlagStore(redis, namespace).history({ ...(name !== undefined && { name }), limit: o.limit });
        if (out.json) return out.document({ changes });
        if (!changes.length) return out.line(name ? `No changes recorded for ${name}.` : 'No flag changes recorded.');
        const state = (v: Record<string, unknown> | null) => (v === null ? '-' : v.enabled === undefined ? 'segment' : v.enabled ? 'on' : 'off');
        const rows = changes.map((c) => [c.at.slice(0, 19) + 'Z', String(c.version), c.name, c.action, `${state(c.before)} -> ${state(c.after)}`, c.actor]);
        for (const l of table(['AT', 'VERSION', 'FLAG', 'ACTION', 'STATE', 'BY'], rows)) out.line(l);
      });
    });
}
