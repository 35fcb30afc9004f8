/**
 * Dependencies point one way: services -> packages. A package, a script or a benchmark never
 * imports a service (services/<name>/...), by relative path or by its @tollgate/<name> package
 * name; what two of them need lives in packages/shared. Service tests may use packages freely.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';
import { ROOT, rootPath } from './infra-files';

const SERVICES = readdirSync(rootPath('services'));
/** @tollgate/<name> -> its folder, for every service. */
const SERVICE_PACKAGES = new Map(
  SERVICES.map((dir) => [(JSON.parse(readFileSync(rootPath('services', dir, 'package.json'), 'utf8')) as { name: string }).name, rootPath('services', dir)]),
);

/** Every module a file names: import/export ... from, import(), require(). */
function specifiersOf(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

/** Where a specifier leads, when it leads into a service; undefined otherwise. */
function serviceTarget(file: string, specifier: string): string | undefined {
  let target: string | undefined;
  if (specifier.startsWith('.')) target = resolve(dirname(file), specifier);
  else {
    const [scope, name] = specifier.split('/');
    const dir = SERVICE_PACKAGES.get(`${scope}/${name}`);
    if (dir) target = join(dir, specifier.split('/').slice(2).join('/'));
  }
  if (!target) return undefined;
  const rel = relative(ROOT, target).split(sep);
  return rel[0] === 'services' && SERVICES.includes(rel[1] ?? '') ? rel.join('/') : undefined;
}

function violations(file: string, text: string): string[] {
  return specifiersOf(text).flatMap((s) => {
    const target = serviceTarget(file, s);
    return target ? [`${relative(ROOT, file)} imports ${s} (${target})`] : [];
  });
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return ['node_modules', 'dist', 'results'].includes(e.name) ? [] : sourceFiles(path);
    return /\.(ts|js|cjs|mjs)$/.test(e.name) ? [path] : [];
  });
}

describe('the dependency direction', () => {
  it('no file under packages/, scripts/ or bench/ imports from a service', () => {
    const files = ['packages', 'scripts', 'bench'].flatMap((d) => sourceFiles(rootPath(d)));
    expect(files.length).toBeGreaterThan(50);
    expect(files.flatMap((f) => violations(f, readFileSync(f, 'utf8')))).toEqual([]);
  });

  it('the scan catches each way of importing a service, and lets packages import packages', () => {
    const cli = rootPath('packages/cli/src/x.ts');
    const script = rootPath('scripts/x.ts');
    const bad = [
      [cli, "import { ApiKeyStore } from '../../../services/gateway/src/auth/api-keys';"],
      [cli, "export { WEBHOOK_QUEUE } from '../../../services/alerting/src/webhooks';"],
      [cli, "import type { LedgerEntry } from '@tollgate/cost-ledger/src/ledger-writer';"],
      [script, "const { toEntry } = require('../services/cost-ledger/src/usage-pricing');"],
      [script, "const worker = await import('@tollgate/vision');"],
      [script, "import '../services/chat-workflow/src/index';"],
    ] as const;
    for (const [file, line] of bad) expect([line, violations(file, line).length]).toEqual([line, 1]);
    const fine = [
      [cli, "import { ApiKeyStore } from '@tollgate/shared';"],
      [cli, "import { createRedis } from '@tollgate/shared/src/redis';"],
      [script, "import { build } from '../packages/shared/src';"],
      [script, "// from '../services/gateway/src/app' in a comment"],
      [script, "spawn(process.execPath, ['services/gateway/dist/index.js']);"],
    ] as const;
    for (const [file, line] of fine) expect([line, violations(file, line)]).toEqual([line, []]);
  });
});
