import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busPartitionsFrom, EventBus, FlagSnapshot, FlagStore } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { cli, cliRedis, lines } from './run-cli';

const { prefix, namespace, redis, cleanup } = cliRedis('flags');
const run = (...args: string[]) => cli(prefix, args);
// The CLI's own bus partitions (6 on a cluster): what it publishes is read with the same count.
const partitions = busPartitionsFrom(process.env);
afterAll(cleanup);
jest.setTimeout(60_000);

test('flags: set, enable/disable, import, list, get and history, and a running snapshot follows each change', async () => {
  const snapshot = new FlagSnapshot({ redis, namespace, maxAgeMs: 120_000, pollMs: 60_000, busPartitions: partitions });
  await snapshot.start();
  try {
    const set = await run('flags', 'set', 'kill.search', '--type', 'kill-switch', '--on');
    expect(set).toMatchObject({ code: 0, stderr: '' });
    expect(set.stdout).toMatch(/^Created kill\.search \(on\), version \d+\.$/m);
    expect(await waitFor(() => snapshot.evaluate('kill.search').enabled, 1_000)).toBe(true);

    expect((await run('flags', 'disable', 'kill.search')).stdout).toMatch(/kill\.search is now off/);
    expect(await waitFor(() => !snapshot.evaluate('kill.search').enabled, 1_000)).toBe(true);
    expect((await run('flags', 'disable', 'kill.search')).stdout).toMatch(/was already off/);

    const doc = join(tmpdir(), `flags-${process.pid}.json`);
    writeFileSync(doc, JSON.stringify({ version: 1, features: [{ name: 'beta', type: 'release', enabled: true, strategies: [{ name: 'userWithId', parameters: { userIds: 'ann' } }] }], segments: [] }));
    const imported = await run('flags', 'import', doc, '--replace', '--json');
    expect(imported.code).toBe(0);
    expect(JSON.parse(imported.stdout)).toMatchObject({ created: 1, deleted: 1 });
    expect(await waitFor(() => snapshot.evaluate('beta', { userId: 'ann' }).enabled && !snapshot.evaluate('kill.search').enabled, 1_000)).toBe(true);

    const list = await run('flags', 'list');
    expect(lines(list.stdout)[0]).toMatch(/^NAME\s+TYPE\s+STATE\s+STRATEGIES\s+VARIANTS\s+STALE\s+UPDATED$/);
    expect(lines(list.stdout)).toHaveLength(2);
    expect(JSON.parse((await run('flags', 'get', 'beta')).stdout)).toMatchObject({ name: 'beta', enabled: true, stale: false, meta: { updated_by: expect.stringMatching(/^cli/) } });

    const history = JSON.parse((await run('flags', 'history', '--json')).stdout) as { changes: Array<{ name: string; action: string; version: number }> };
    // Newest first; the import's two changes share one version.
    expect(history.changes.map((c) => `${c.action}:${c.name}`).slice(2)).toEqual(['updated:kill.search', 'created:kill.search']);
    expect(history.changes.slice(0, 2).map((c) => `${c.action}:${c.name}`).sort()).toEqual(['created:beta', 'deleted:kill.search']);
    expect(history.changes[0]!.version).toBe(history.changes[1]!.version);
    // Each change also went out as flag.changed on the bus.
    const audited = await new EventBus({ redis, prefix: namespace, service: 'test', partitions }).history({ types: 'flag.changed' });
    expect(audited).toHaveLength(4);

    const missing = await run('flags', 'enable', 'nope');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: No flag named "nope"\./);
    const bad = await run('flags', 'set', 'x', '--file', doc);
    expect(bad.code).toBe(1);
    expect(await new FlagStore(redis, namespace).get('x')).toBeUndefined();
  } finally {
    await snapshot.stop();
  }
});
