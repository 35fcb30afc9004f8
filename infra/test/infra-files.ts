/**
 * Reads the deployment files (Dockerfile, compose, Kubernetes, Prometheus, Grafana, .env.example)
 * and the facts they must agree with, taken from the code itself: the services in services/,
 * the environment variables each one actually reads (from the zod schemas' keys, by parsing the
 * TypeScript), package versions. Shared by the wiring tests.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import ts from 'typescript';
import { parse, parseAllDocuments } from 'yaml';

export const ROOT = resolve(__dirname, '..', '..');
export const rootPath = (...parts: string[]): string => join(ROOT, ...parts);
export const readText = (...parts: string[]): string => readFileSync(rootPath(...parts), 'utf8');

/** YAML with merge keys (`<<: *anchor`), as docker compose reads it; duplicate keys are errors. */
export function readYaml<T = Record<string, any>>(...parts: string[]): T {
  return parse(readText(...parts), { merge: true, uniqueKeys: true }) as T;
}

export function readYamlDocs(...parts: string[]): Array<Record<string, any>> {
  return parseAllDocuments(readText(...parts), { merge: true, uniqueKeys: true })
    .map((doc) => {
      if (doc.errors.length) throw new Error(`${parts.join('/')}: ${doc.errors[0]?.message}`);
      return doc.toJS() as Record<string, any> | null;
    })
    .filter((doc): doc is Record<string, any> => doc !== null);
}

/** The Tollgate services: every folder of services/ with a package.json. */
export const SERVICES = readdirSync(rootPath('services'))
  .filter((name) => existsSync(rootPath('services', name, 'package.json')))
  .sort();
/** Everything the Dockerfile can build: the services and the stub provider. */
export const STUB = 'stub-llm';
export const DEPLOYABLES = [...SERVICES, STUB];
export const WORKERS = SERVICES.filter((s) => s !== 'gateway');

export function packageDir(name: string): string {
  if (existsSync(rootPath('services', name, 'package.json'))) return rootPath('services', name);
  if (existsSync(rootPath('packages', name, 'package.json'))) return rootPath('packages', name);
  throw new Error(`no workspace package folder named ${name}`);
}

export function packageJson(name: string): { name: string; version: string; main?: string } {
  return JSON.parse(readFileSync(join(packageDir(name), 'package.json'), 'utf8'));
}

/** The image a deployable is published as: tollgate/<name>:<its package.json version>. */
export const imageOf = (name: string): string => `tollgate/${name}:${packageJson(name).version}`;

/**
 * Keys of `const EnvSchema = z.object({...})` in a source file: the variables that module reads.
 * Parsed with the TypeScript compiler, so it follows the code rather than a hand-kept list.
 */
export function envSchemaKeys(file: string): string[] {
  const source = ts.createSourceFile(file, readText(file), ts.ScriptTarget.ES2022, true);
  let keys: string[] | undefined;
  const visit = (node: ts.Node): void => {
    if (
      ts.isVariableDeclaration(node) &&
      ts.isIdentifier(node.name) &&
      node.name.text === 'EnvSchema' &&
      node.initializer &&
      ts.isCallExpression(node.initializer)
    ) {
      const arg = node.initializer.arguments[0];
      if (arg && ts.isObjectLiteralExpression(arg)) {
        keys = arg.properties.map((p) => {
          if (!p.name || !(ts.isIdentifier(p.name) || ts.isStringLiteral(p.name))) throw new Error(`${file}: EnvSchema key is not a plain name`);
          return p.name.text;
        });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  if (!keys || keys.length === 0) throw new Error(`${file}: no "const EnvSchema = z.object({...})" found`);
  return keys;
}

/** Every name a `process.env.X` / `env.X` expression reads in a file. */
export function envReadsIn(file: string): string[] {
  return [...readText(file).matchAll(/\benv\.([A-Z][A-Z0-9_]*)\b/g)].map((m) => m[1]!);
}

export const CONFIG_VARS = envSchemaKeys('packages/shared/src/config.ts');
export const ALERTING_VARS = envSchemaKeys('services/alerting/src/settings.ts');
export const JOURNEY_VARS = envSchemaKeys('services/journeys/src/settings.ts');
export const LOGGER_VARS = envReadsIn('packages/shared/src/logger.ts');
export const STUB_VARS = envReadsIn('packages/stub-llm/src/cli.ts');

/** The variables a deployable's process reads, whoever in its code reads them. */
export function varsReadBy(name: string): Set<string> {
  if (name === STUB) return new Set(STUB_VARS);
  const vars = new Set([...CONFIG_VARS, ...LOGGER_VARS]);
  if (name === 'alerting') for (const v of ALERTING_VARS) vars.add(v);
  if (name === 'journeys') for (const v of JOURNEY_VARS) vars.add(v);
  return vars;
}

export const ALL_READ_VARS = new Set([...CONFIG_VARS, ...ALERTING_VARS, ...JOURNEY_VARS, ...LOGGER_VARS, ...STUB_VARS]);

/** .env.example: `NAME=value` lines and documented defaults `# NAME=value`. */
export function envExample(): { active: Record<string, string>; documented: Record<string, string> } {
  const active: Record<string, string> = {};
  const documented: Record<string, string> = {};
  for (const line of readText('.env.example').split('\n')) {
    const m = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, hash, name, value] = m;
    if (name! in documented) throw new Error(`.env.example documents ${name} twice`);
    documented[name!] = value!;
    if (!hash) active[name!] = value!;
  }
  return { active, documented };
}

/** A Dockerfile as instructions (continuation lines joined, comments dropped), grouped by stage. */
export interface Instruction {
  op: string;
  args: string;
}
export interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

export function dockerfile(...parts: string[]): { globalArgs: Instruction[]; stages: Stage[] } {
  const lines: string[] = [];
  let current = '';
  for (const raw of readText(...parts).split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // a comment inside a continued instruction
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    lines.push(current + line);
    current = '';
  }
  const globalArgs: Instruction[] = [];
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(line);
    if (!m) throw new Error(`unparsable Dockerfile line: ${line}`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === 'FROM') {
      const from = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ from: from?.[1] ?? args, name: from?.[2], instructions: [] });
    } else if (stages.length === 0) {
      globalArgs.push({ op, args });
    } else {
      stages[stages.length - 1]!.instructions.push({ op, args });
    }
  }
  return { globalArgs, stages };
}

/** `KEY=value` pairs of ENV/ARG instructions (the forms this repo uses). */
export function assignments(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)(?:=("[^"]*"|\S*))?/g)) {
    out[m[1]!] = (m[2] ?? '').replace(/^"|"$/g, '');
  }
  return out;
}

export const isDir = (...parts: string[]): boolean => existsSync(rootPath(...parts)) && statSync(rootPath(...parts)).isDirectory();

/** The final (runtime) stage's ENV of infra/docker/Dockerfile: what every container starts with. */
export function dockerRuntimeEnv(): Record<string, string> {
  const { stages } = dockerfile('infra/docker/Dockerfile');
  const runtime = stages[stages.length - 1]!;
  return Object.assign({}, ...runtime.instructions.filter((i) => i.op === 'ENV').map((i) => assignments(i.args)));
}

export const compose = readYaml('docker-compose.yml');
export const composeServices = compose.services as Record<string, Record<string, any>>;

/** What a compose service's process sees from compose: .env (as copied from .env.example) overridden by `environment`. */
export function composeEnv(name: string): Record<string, string> {
  const svc = composeServices[name];
  if (!svc) throw new Error(`docker-compose.yml has no service ${name}`);
  const fromFile = svc.env_file ? envExample().active : {};
  return { ...fromFile, ...(svc.environment as Record<string, string> | undefined) };
}

/** The compose service built with --build-arg SERVICE=<deployable>. */
export function composeNameOf(deployable: string): string {
  const found = Object.entries(composeServices).filter(([, svc]) => svc.build?.args?.SERVICE === deployable);
  if (found.length !== 1) throw new Error(`docker-compose.yml builds ${deployable} ${found.length} times`);
  return found[0]![0];
}
