#!/usr/bin/env node
// `pnpm build`: one self-contained JavaScript bundle per runnable package, which plain `node` runs
// (no tsx, no TypeScript at runtime):
//
//   services/<name>/src/index.ts    -> services/<name>/dist/index.js
//   packages/stub-llm/src/cli.ts    -> packages/stub-llm/dist/index.js
//
// Redis scripts (.lua files beside their callers) are inlined into the bundle as text.
//
// Third-party code is bundled too. Resolving it at build time, from each importing file's own
// folder, is what makes pnpm's strict layout a non-issue: the gateway bundle needs winston, which
// only @tollgate/shared depends on, and nothing has to find it at runtime. The bundles therefore
// run the same from the repo, from a `pnpm deploy` folder or from a Docker image. Left out
// (required at runtime, when at all): optional native add-ons, which their packages load in a
// try/catch and replace with JavaScript when absent.
//
// Plain JS with only esbuild as a dependency, so it runs before anything else is built; tsc still
// does the type-checking (`pnpm typecheck`), esbuild only strips types. `require('./build.js')`
// gives `build()` to the scripts that start services (scripts/start.ts, bench, reliability suite).
'use strict';
const { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } = require('node:fs');
const { dirname, join, relative, sep } = require('node:path');

const root = join(__dirname, '..');
const { readLuaSource } = require('../packages/shared/src/lua/source.js');

/** Optional native add-ons: required in a try/catch by their packages, which fall back to JS. */
const OPTIONAL_NATIVES = [
  'msgpackr-extract', // msgpackr (BullMQ): native msgpack decoding
  'bufferutil', // ws (@google/genai live API): native frame masking
  'utf-8-validate', // ws
];

/**
 * Pure data loaded lazily and rarely goes to files of its own beside the bundle, required only when
 * first used: V8 keeps a bundle's whole source in memory, so bundling the tokenizer's 2.3 MB of
 * ranks would cost every worker that much even when it never counts a token. Likewise the
 * gateway's body parser: iconv-lite's CJK code tables (~450 KB of JSON) load only for requests
 * in those encodings.
 */
const SEPARATE_DATA = { 'js-tiktoken/ranks/o200k_base': 'o200k_base.js' };
const ICONV_TABLE = /^\.\/tables\/[\w-]+\.json$/;
const ICONV_DIR = `${sep}iconv-lite${sep}encodings${sep}`;

/** `copies` collects, per bundle, the data files to copy next to it: destination -> source. */
function separateDataPlugin(copies) {
  return {
    name: 'tollgate-separate-data',
    setup(build) {
      const filter = new RegExp(`^(${Object.keys(SEPARATE_DATA).map((m) => m.replace(/[/.]/g, '\\$&')).join('|')})$`);
      build.onResolve({ filter }, (args) => ({ path: `./${SEPARATE_DATA[args.path]}`, external: true }));
      build.onResolve({ filter: ICONV_TABLE }, (args) => {
        if (!args.importer.includes(ICONV_DIR)) return undefined;
        const file = `iconv-tables/${args.path.slice('./tables/'.length)}`;
        const source = join(dirname(args.importer), args.path);
        if (copies.has(file) && copies.get(file) !== source) {
          return { errors: [{ text: `two iconv-lite versions both want dist/${file}: ${copies.get(file)} and ${source}` }] };
        }
        copies.set(file, source);
        return { path: `./${file}`, external: true };
      });
    },
  };
}

/**
 * Replaces a file in one step (write beside it, then rename): a service started while another
 * build runs (tests build and start services side by side) reads the old bundle or the new one,
 * never a half-written one. An empty bundle ran, did nothing and exited 0.
 */
function writeAtomic(path, contents) {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, contents);
  renameSync(tmp, path);
}

/** esbuild with its output written atomically (see writeAtomic). */
async function buildAtomic(esbuild, options) {
  const result = await esbuild.build({ ...options, write: false });
  for (const f of result.outputFiles) writeAtomic(f.path, f.contents);
  return result;
}

/** Writes the separate data files a bundle refers to into its dist/ (from the bundle's package). */
async function buildSeparateData(esbuild, t, outDir, metafile, copies) {
  const wanted = Object.entries(SEPARATE_DATA).filter(([, file]) =>
    Object.values(metafile.outputs).some((o) => o.imports.some((i) => i.path === `./${file}` && i.external)),
  );
  for (const [file, source] of copies) writeAtomic(join(outDir, file), readFileSync(source));
  await Promise.all(
    wanted.map(([mod, file]) =>
      buildAtomic(esbuild, {
        stdin: { contents: `module.exports = require(${JSON.stringify(mod)});`, resolveDir: join(root, 'packages', 'shared'), loader: 'js' },
        outfile: join(outDir, file),
        bundle: true,
        platform: 'node',
        target: 'node20',
        format: 'cjs',
        minifyWhitespace: true,
        legalComments: 'external',
        logLevel: 'warning',
      }),
    ),
  );
}

/** Redis scripts (`import SCRIPT from './admit-1.lua'`) are bundled as their text, includes expanded. */
function luaPlugin() {
  return {
    name: 'tollgate-lua',
    setup(build) {
      build.onLoad({ filter: /\.lua$/ }, (args) => {
        const { source, files } = readLuaSource(args.path);
        return { contents: source, loader: 'text', watchFiles: files };
      });
    },
  };
}

/** Every runnable package: the services, and the stub provider (its entry is the CLI). */
function targets() {
  const services = readdirSync(join(root, 'services'))
    .filter((name) => existsSync(join(root, 'services', name, 'src', 'index.ts')))
    .map((name) => ({ name, dir: join(root, 'services', name), entry: 'src/index.ts' }));
  return [...services, { name: 'stub-llm', dir: join(root, 'packages', 'stub-llm'), entry: 'src/cli.ts' }];
}

const posix = (p) => p.split(sep).join('/');

/**
 * `__dirname` and `__filename` in a bundle are the bundle's own: `dist/`. A source file of the
 * package being bundled keeps meaning its own folder (the gateway serves `public/` found relative
 * to its source), via a path relative to the bundle that holds in the repo and in a deployed copy
 * of the package alike. Outside the package that relation does not survive `pnpm deploy`, so a
 * workspace file elsewhere that uses them fails the build instead of misbehaving at runtime.
 */
function sourcePathsPlugin(pkgDir, outDir) {
  return {
    name: 'tollgate-source-paths',
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, (args) => {
        if (args.path.split(sep).includes('node_modules')) return undefined;
        const text = readFileSync(args.path, 'utf8');
        if (!/\b__(dirname|filename)\b/.test(text)) return undefined;
        if (relative(pkgDir, args.path).startsWith('..')) {
          return { errors: [{ text: `${relative(root, args.path)} uses __dirname/__filename, which cannot point at its source once bundled into ${relative(root, outDir)}` }] };
        }
        const dirFromOut = posix(relative(outDir, dirname(args.path)));
        const fileFromOut = posix(relative(outDir, args.path));
        const contents =
          `const __tollgateSourceDir = require('node:path').join(__dirname, ${JSON.stringify(dirFromOut)});\n` +
          `const __tollgateSourceFile = require('node:path').join(__dirname, ${JSON.stringify(fileFromOut)});\n` +
          text.replace(/\b__dirname\b/g, '__tollgateSourceDir').replace(/\b__filename\b/g, '__tollgateSourceFile');
        return { contents, loader: 'ts' };
      });
    },
  };
}

/**
 * Builds every target (or the named ones) in parallel. Quick (well under a second per bundle), so
 * the scripts that start services call it every time instead of trusting a stale dist/.
 */
async function build(options = {}) {
  const esbuild = require('esbuild');
  const only = options.only;
  const selected = targets().filter((t) => !only || only.includes(t.name));
  if (only) {
    const unknown = only.filter((name) => !selected.some((t) => t.name === name));
    if (unknown.length > 0) throw new Error(`build: unknown target(s): ${unknown.join(', ')}`);
  }
  const started = Date.now();
  const results = await Promise.all(
    selected.map(async (t) => {
      const outDir = join(t.dir, 'dist');
      const outfile = join(outDir, 'index.js');
      const copies = new Map();
      const built = await buildAtomic(esbuild, {
        entryPoints: [join(t.dir, t.entry)],
        outfile,
        bundle: true,
        platform: 'node',
        target: 'node20',
        format: 'cjs',
        // Class and function names survive renaming: error classifiers and logs read `.name`.
        keepNames: true,
        // Whitespace and comments only (names stay readable in stack traces). It drops the few
        // non-ASCII characters of third-party comments, which would make V8 hold the whole
        // bundle's source as a two-byte string: about 5 MB of a service's idle memory.
        minifyWhitespace: true,
        // Third-party license comments go to dist/index.js.LEGAL.txt, for the same reason.
        legalComments: 'external',
        // dist/index.js.map: `node --enable-source-maps` maps stack traces back to the sources.
        sourcemap: 'linked',
        external: OPTIONAL_NATIVES,
        plugins: [sourcePathsPlugin(t.dir, outDir), separateDataPlugin(copies), luaPlugin()],
        logLevel: 'warning',
        logOverride: {
          // Third-party code probing for optional modules with require() in a try/catch.
          'require-resolve-not-external': 'silent',
        },
        metafile: true,
      });
      await buildSeparateData(esbuild, t, outDir, built.metafile, copies);
      return { name: t.name, outfile: relative(root, outfile) };
    }),
  );
  if (!options.quiet) {
    process.stdout.write(`build: ${results.map((r) => r.outfile).join(', ')} in ${Date.now() - started} ms\n`);
  }
  return results;
}

module.exports = { build, targets };

if (require.main === module) {
  const only = process.argv.slice(2);
  build({ only: only.length > 0 ? only : undefined }).catch((err) => {
    process.stderr.write(`build failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
