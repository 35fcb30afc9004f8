import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PriceStore } from '@tollgate/shared';
import { cli, cliRedis } from './run-cli';

const env = cliRedis('prices');
afterAll(() => env.cleanup());

test('tollgate prices list | set | delete, through the store the price API writes', async () => {
  const list = await cli(env.prefix, ['prices', 'list']);
  expect(list.code).toBe(0);
  expect(list.stdout).toMatch(/2026-01-01\s+2026-01-01T00:00:00Z\s+seed\s+\d+\s+in force/);
  expect(list.stdout).toMatch(/google\/custom-search\s+per_1k_units=5000000/);

  const dir = mkdtempSync(join(tmpdir(), 'tollgate-prices-'));
  const file = join(dir, 'v.json');
  const from = new Date(Date.now() + 3_600_000).toISOString();
  writeFileSync(file, JSON.stringify({ effective_from: from, extends: '2026-01-01', models: { 'acme/geocode': { per_call: 1500 } } }));
  const set = await cli(env.prefix, ['prices', 'set', 'cli-1', '--file', file]);
  expect(set.stdout).toContain('Added price version cli-1');
  const stored = await new PriceStore(env.redis, env.namespace).versions();
  expect(stored.map((v) => [v.version, v.models['acme/geocode']])).toEqual([['cli-1', { per_call: 1500 }]]);
  expect((await cli(env.prefix, ['prices', 'list', '--json'])).stdout).toContain('"source": "api"');

  writeFileSync(file, JSON.stringify({ effective_from: new Date().toISOString(), models: { 'acme/geocode': { per_call: 1 } } }));
  const soon = await cli(env.prefix, ['prices', 'set', 'cli-2', '--file', file]);
  expect(soon.code).toBe(1);
  expect(soon.stderr).toContain('effective_from must be at least 60 s from now');

  expect((await cli(env.prefix, ['prices', 'delete', 'cli-1'])).stdout).toContain('Deleted price version cli-1.');
  expect(await new PriceStore(env.redis, env.namespace).versions()).toEqual([]);
}, 60_000);
