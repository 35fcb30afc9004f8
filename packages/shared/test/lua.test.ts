import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { readLuaSource } from '../src/lua/source';

const ROOT = join(__dirname, '..', '..', '..');

function luaFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'dist' ? [] : luaFiles(path);
    return e.name.endsWith('.lua') ? [path] : [];
  });
}
const scripts = ['packages', 'services'].flatMap((d) => luaFiles(join(ROOT, d)));

test('every Redis script is named by what it does and its key count, which matches the KEYS it uses, under a KEYS/ARGV header', () => {
  expect(scripts.length).toBeGreaterThanOrEqual(12);
  const included = new Set(scripts.flatMap((f) => readLuaSource(f).files.slice(1)));
  expect([...included].map((f) => relative(ROOT, f))).toEqual(['packages/shared/src/budget/release-hold.lua', 'services/alerting/src/notify.lua']);
  for (const file of scripts) {
    if (included.has(file)) continue; // a piece of other scripts, not run alone
    const name = relative(ROOT, file);
    const text = readFileSync(file, 'utf8');
    const header = text.match(/^(--[^\n]*\n)+/)?.[0] ?? '';
    expect([name, /^[a-z]+(-[a-z]+)*-(\d+|n)\.lua$/.test(file.split('/').at(-1)!)]).toEqual([name, true]);
    expect([name, /-- KEYS:/.test(header) && /-- ARGV:/.test(header) && /-- Returns:/.test(header)]).toEqual([name, true]);
    const count = file.match(/-(\d+|n)\.lua$/)![1]!;
    if (count === 'n') continue;
    const source = readLuaSource(file).source;
    const used = Math.max(...[...source.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1])));
    // KEYS[5 + i]: computed indexes hide the highest one, so only the literal ones are bounded.
    if (/KEYS\[(?!\d+\])/.test(source)) expect([name, used <= Number(count)]).toEqual([name, true]);
    else expect([name, used]).toEqual([name, Number(count)]);
  }
});

describe('includes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-lua-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('are replaced by the file they name, relative to the including file, and reported for cache keys', () => {
    writeFileSync(join(dir, 'lib.lua'), 'local function twice(x) return x * 2 end\n');
    writeFileSync(join(dir, 'main-1.lua'), '-- KEYS: 1 a number\n-- @include "lib.lua"\nreturn twice(tonumber(redis.call(\'GET\', KEYS[1])))\n');
    const { source, files } = readLuaSource(join(dir, 'main-1.lua'));
    expect(source).toBe("-- KEYS: 1 a number\nlocal function twice(x) return x * 2 end\n\nreturn twice(tonumber(redis.call('GET', KEYS[1])))\n");
    expect(files).toEqual([join(dir, 'main-1.lua'), join(dir, 'lib.lua')]);
  });

  it('that form a cycle, or name a missing file, fail loudly', () => {
    writeFileSync(join(dir, 'a.lua'), '-- @include "b.lua"\n');
    writeFileSync(join(dir, 'b.lua'), '-- @include "a.lua"\n');
    expect(() => readLuaSource(join(dir, 'a.lua'))).toThrow(/Lua include cycle: .*a\.lua -> .*b\.lua -> .*a\.lua/);
    writeFileSync(join(dir, 'c.lua'), '-- @include "missing.lua"\n');
    expect(() => readLuaSource(join(dir, 'c.lua'))).toThrow(/ENOENT/);
  });
});
