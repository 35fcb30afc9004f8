import { OpenFeature } from '@openfeature/server-sdk';
import { EventBus } from '../src/bus/event-bus';
import {
  chatExperiment,
  ExposureLog,
  type Feature,
  featureSchema,
  FlagEngine,
  FlagSnapshot,
  FlagStore,
  importEdit,
  isStale,
  publishFlagChanges,
  TollgateFlagProvider,
} from '../src/flags';
import { tenantShardNamespaces, tenantShardOf } from '../src/tenant-shards';
import { testRedis, waitFor } from '../src/testing';

const { redis, prefix, cleanup } = testRedis('flags');
afterAll(cleanup);

const flag = (name: string, enabled: boolean, extra: Partial<Feature> = {}): Feature => featureSchema.parse({ name, enabled, strategies: [{ name: 'default' }], ...extra });

describe('FlagStore', () => {
  const ns = `${prefix}:store`;
  const store = new FlagStore(redis, ns);

  test('every change is applied with its audit entry: who, when, before, after; an identical write is not a change', async () => {
    const a = await store.apply('alice', () => ({ put: [flag('checkout', false)] }), () => new Date('2026-12-01T10:00:00Z'));
    expect(a.changes).toMatchObject([{ name: 'checkout', action: 'created', actor: 'alice', at: '2026-12-01T10:00:00.000Z', before: null, after: { enabled: false } }]);
    const b = await store.apply('bob', () => ({ put: [flag('checkout', true)] }));
    expect(b.version).toBe(a.version + 1);
    expect(b.changes[0]).toMatchObject({ action: 'updated', actor: 'bob', before: { enabled: false, createdAt: '2026-12-01T10:00:00.000Z' }, after: { enabled: true, createdAt: '2026-12-01T10:00:00.000Z' } });
    const same = await store.apply('carol', () => ({ put: [flag('checkout', true)] }));
    expect(same).toEqual({ version: b.version, changes: [] });
    const d = await store.apply('dave', () => ({ remove: ['checkout', 'never-existed'] }));
    expect(d.changes).toMatchObject([{ name: 'checkout', action: 'deleted', before: { enabled: true }, after: null }]);
    const history = await store.history({ name: 'checkout' });
    expect(history.map((h) => [h.action, h.actor, h.version])).toEqual([
      ['deleted', 'dave', d.version],
      ['updated', 'bob', b.version],
      ['created', 'alice', a.version],
    ]);
    expect(await store.get('checkout')).toBeUndefined();
  });

  test('concurrent writers each land exactly once, with distinct versions', async () => {
    const v0 = await store.version();
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.apply(`w${i}`, () => ({ put: [flag(`c${i}`, true)] }))));
    expect(new Set(results.map((r) => r.version)).size).toBe(8);
    expect(await store.version()).toBe(v0 + 8);
    expect((await store.load()).flags.filter((f) => f.name.startsWith('c')).length).toBe(8);
  });

  test('an import with replace removes the flags and segments the document does not name', async () => {
    const ins = `${prefix}:import`;
    const s = new FlagStore(redis, ins);
    await s.apply('op', () => ({ put: [flag('old', true), flag('kept', false)], putSegments: [{ id: 9, constraints: [] }] }));
    const doc = { version: 1, features: [flag('kept', true), flag('new', true)], segments: [{ id: 1, constraints: [] }] };
    const r = await s.apply('op', importEdit(doc, true));
    expect(r.changes.map((c) => `${c.action}:${c.name}`).sort()).toEqual(['created:new', 'created:segment:1', 'deleted:old', 'deleted:segment:9', 'updated:kept']);
    const state = await s.load();
    expect(state.flags.map((f) => f.name).sort()).toEqual(['kept', 'new']);
    expect(state.segments.map((x) => x.id)).toEqual([1]);
    // Without replace, unnamed flags stay.
    await s.apply('op', importEdit({ version: 1, features: [flag('other', true)], segments: [] }, false));
    expect((await s.load()).flags.map((f) => f.name).sort()).toEqual(['kept', 'new', 'other']);
  });

  test('flags go stale after their type\'s expected lifetime; kill switches and permissions never do', () => {
    const now = Date.parse('2026-12-02T00:00:00Z');
    const created = (days: number) => new Date(now - days * 86_400_000).toISOString();
    expect(isStale({ type: 'release', createdAt: created(41) }, now)).toBe(true);
    expect(isStale({ type: 'release', createdAt: created(39) }, now)).toBe(false);
    expect(isStale({ type: 'operational', createdAt: created(8) }, now)).toBe(true);
    expect(isStale({ type: 'kill-switch', createdAt: created(4000) }, now)).toBe(false);
    expect(isStale({ type: 'permission', createdAt: created(4000) }, now)).toBe(false);
    expect(isStale({ type: 'permission', createdAt: created(1), stale: true }, now)).toBe(true);
  });
});

describe('FlagSnapshot', () => {
  test('a change pushed over the bus reaches every snapshot; without the push, the poll finds it', async () => {
    const ns = `${prefix}:snap`;
    const store = new FlagStore(redis, ns);
    const bus = new EventBus({ redis, prefix: ns, service: 'test' });
    // Polls rarely here, so only the push can explain a quick update.
    const snaps = [0, 1].map(() => new FlagSnapshot({ redis, namespace: ns, maxAgeMs: 60_000, pollMs: 60_000 }));
    await Promise.all(snaps.map((s) => s.start()));
    try {
      expect(snaps[0]!.evaluate('beta').error_code).toBe('FLAG_NOT_FOUND');
      const r = await store.apply('op', () => ({ put: [flag('beta', true)] }));
      await publishFlagChanges(bus, r, 'op');
      expect(await waitFor(() => snaps.every((s) => s.evaluate('beta').enabled), 1_000)).toBe(true);
      expect(snaps[1]!.evaluate('beta')).toMatchObject({ enabled: true, reason: 'STATIC' });

      const polled = new FlagSnapshot({ redis, namespace: ns, maxAgeMs: 60_000, pollMs: 50 });
      await polled.start();
      await store.apply('op', () => ({ put: [flag('beta', false)] })); // no event published
      expect(await waitFor(() => polled.evaluate('beta').reason === 'DISABLED', 2_000)).toBe(true);
      await polled.stop();
    } finally {
      await Promise.all(snaps.map((s) => s.stop()));
    }
  });

  test('past the configured age without a confirmed sync, evaluations say STALE and keep the last values', async () => {
    const ns = `${prefix}:stale`;
    await new FlagStore(redis, ns).apply('op', () => ({ put: [flag('f', true)] }));
    let now = 1_000_000;
    const snap = new FlagSnapshot({ redis, namespace: ns, maxAgeMs: 5_000, pollMs: 60_000, now: () => now });
    await snap.start();
    try {
      expect(snap.evaluate('f')).toMatchObject({ enabled: true, reason: 'STATIC' });
      now += 5_001;
      expect(snap.evaluate('f')).toMatchObject({ enabled: true, reason: 'STALE' });
      // A missing flag stays an error, stale or not.
      expect(snap.evaluate('nope')).toMatchObject({ reason: 'ERROR', error_code: 'FLAG_NOT_FOUND' });
      await snap.refresh();
      expect(snap.evaluate('f').reason).toBe('STATIC');
    } finally {
      await snap.stop();
    }
  });
});

describe('ExposureLog', () => {
  test('one flag.exposed per subject, flag and UTC day, however many instances and requests', async () => {
    const ns = `${prefix}:exposure`;
    const bus = new EventBus({ redis, prefix: ns, service: 'test' });
    let now = Date.parse('2026-12-02T23:59:00Z');
    const logs = [0, 1, 2].map(() => new ExposureLog(redis, ns, bus, () => now));
    const meta = { correlation_id: 'r1', user_id: 'u1', project_id: 'p1' };
    const first = await Promise.all(logs.flatMap((l) => [l.record('exp', 'a', 'u1', true, meta), l.record('exp', 'a', 'u1', true, meta)]));
    expect(first.filter(Boolean)).toHaveLength(1);
    await logs[0]!.record('exp', 'a', 'u2', true, meta);
    await logs[1]!.record('other', 'b', 'u1', true, meta);
    now += 120_000; // the next UTC day
    await logs[2]!.record('exp', 'a', 'u1', true, meta);
    const events = (await bus.history({ types: 'flag.exposed' })).map((e) => e.event.type === 'flag.exposed' && `${e.event.data.day}:${e.event.data.flag}:${e.event.data.subject}`);
    expect(events).toEqual(['2026-12-02:exp:u1', '2026-12-02:exp:u2', '2026-12-02:other:u1', '2026-12-03:exp:u1']);
  });

  test('with tenant shards, a subject\'s markers sit in its shard and the decision still holds across instances', async () => {
    const ns = `${prefix}:exposure-shards`;
    const bus = new EventBus({ redis, prefix: ns, service: 'test' });
    const now = Date.parse('2026-12-02T12:00:00Z');
    const logs = [0, 1].map(() => new ExposureLog(redis, ns, bus, () => now, 4));
    const meta = { correlation_id: 'r1', user_id: 'u1', project_id: 'p1' };
    const subjects = ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7'];
    const a = subjects[0]!;
    const b = subjects.find((s) => tenantShardOf(s, 4) !== tenantShardOf(a, 4))!;
    for (const subject of [a, b]) {
      const won = await Promise.all(logs.map((l) => l.record('exp', 'on', subject, true, meta)));
      expect(won.filter(Boolean)).toHaveLength(1);
    }
    const shards = tenantShardNamespaces(ns, 4);
    expect(await redis.get(`${shards[tenantShardOf(a, 4)]}:flags:exposed:2026-12-02:exp:${a}`)).toBe('on');
    expect(await redis.get(`${shards[tenantShardOf(b, 4)]}:flags:exposed:2026-12-02:exp:${b}`)).toBe('on');
    expect(shards[tenantShardOf(a, 4)]).not.toBe(shards[tenantShardOf(b, 4)]);
    expect((await bus.history({ types: 'flag.exposed' })).map((e) => e.event.type === 'flag.exposed' && e.event.data.subject)).toEqual([a, b]);
  });
});

describe('OpenFeature provider', () => {
  const engine = new FlagEngine({
    features: [
      flag('on', true),
      flag('off', false),
      flag('ab', true, {
        variants: [{ name: 'blue', weight: 1000, stickiness: 'default', payload: { type: 'json', value: '{"color":"blue","n":3}' } }],
      }),
      flag('limit', true, { variants: [{ name: 'high', weight: 1000, payload: { type: 'number', value: '42' } }] }),
      flag('label', true, { variants: [{ name: 'x', weight: 1000, payload: { type: 'string', value: 'hello' } }] }),
      flag('targeted', true, { strategies: [{ name: 'userWithId', parameters: { userIds: 'alice' }, constraints: [] }] }),
    ],
    segments: [],
  });

  test('boolean, string, number and object evaluation with variant, reason and error code', async () => {
    await OpenFeature.setProviderAndWait('flags-test', new TollgateFlagProvider(engine));
    const client = OpenFeature.getClient('flags-test');
    expect(await client.getBooleanDetails('on', false)).toMatchObject({ value: true, reason: 'STATIC' });
    expect(await client.getBooleanDetails('off', true)).toMatchObject({ value: false, reason: 'DISABLED' });
    expect(await client.getBooleanDetails('targeted', false, { targetingKey: 'alice' })).toMatchObject({ value: true, reason: 'TARGETING_MATCH' });
    expect(await client.getBooleanDetails('targeted', true, { targetingKey: 'bob' })).toMatchObject({ value: false, reason: 'DEFAULT' });
    expect(await client.getBooleanDetails('missing', true)).toMatchObject({ value: true, reason: 'ERROR', errorCode: 'FLAG_NOT_FOUND' });
    expect(await client.getObjectDetails('ab', {}, { targetingKey: 'u' })).toMatchObject({ value: { color: 'blue', n: 3 }, variant: 'blue', reason: 'SPLIT' });
    expect(await client.getNumberDetails('limit', 1)).toMatchObject({ value: 42, variant: 'high' });
    expect(await client.getStringDetails('label', 'd')).toMatchObject({ value: 'hello', variant: 'x' });
    expect(await client.getStringDetails('limit', 'd')).toMatchObject({ value: 'd', reason: 'ERROR', errorCode: 'TYPE_MISMATCH' });
    expect(await client.getStringDetails('off', 'd')).toMatchObject({ value: 'd', reason: 'DISABLED' });
    await OpenFeature.clearProviders();
  });
});

describe('chat experiment', () => {
  const engine = (payload: { type: 'json' | 'string'; value: string } | undefined) =>
    new FlagEngine({
      features: [
        featureSchema.parse({
          name: 'tollgate.experiment.chat-provider',
          type: 'experiment',
          enabled: true,
          strategies: [{ name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: 'exp' } }],
          variants: [{ name: 'v', weight: 1000, stickiness: 'default', ...(payload && { payload }) }],
        }),
      ],
      segments: [],
    });

  test('a variant maps to a chain or a model; a bad payload leaves the configured chain', () => {
    expect(chatExperiment(engine({ type: 'json', value: '{"chain":["openai:gpt-4o-mini","gemini:gemini-2.0-flash"]}' }), { userId: 'u' })).toEqual({
      flag: 'tollgate.experiment.chat-provider',
      variant: 'v',
      chain: [{ provider: 'openai', model: 'gpt-4o-mini' }, { provider: 'gemini', model: 'gemini-2.0-flash' }],
    });
    expect(chatExperiment(engine({ type: 'json', value: '{"model":"deepseek-chat"}' }), { userId: 'u' })).toMatchObject({ model: 'deepseek-chat' });
    expect(chatExperiment(engine(undefined), { userId: 'u' })).toEqual({ flag: 'tollgate.experiment.chat-provider', variant: 'v' });
    expect(chatExperiment(engine({ type: 'json', value: '{"chain":["nosuch:model"]}' }), { userId: 'u' })).toBeUndefined();
    expect(chatExperiment(engine({ type: 'string', value: 'x' }), { userId: 'u' })).toBeUndefined();
  });
});

test('flags that are off or plain on/off evaluate without loading the Unleash SDK', () => {
  jest.isolateModules(() => {
    jest.doMock('unleash-client/lib/client', () => {
      throw new Error('SDK loaded');
    });
    const { FlagEngine: Engine, featureSchema: schema } = require('../src/flags') as typeof import('../src/flags');
    const engine = new Engine({ features: [schema.parse({ name: 'kill', type: 'kill-switch', enabled: true }), schema.parse({ name: 'off', enabled: false, strategies: [{ name: 'userWithId', parameters: { userIds: 'a' } }] })], segments: [] });
    expect(engine.evaluate('kill', { userId: 'u' })).toMatchObject({ enabled: true, reason: 'STATIC' });
    expect(engine.evaluate('off', { userId: 'a' })).toMatchObject({ enabled: false, reason: 'DISABLED' });
    expect(() => new Engine({ features: [schema.parse({ name: 't', enabled: true, strategies: [{ name: 'userWithId', parameters: { userIds: 'a' } }] })], segments: [] })).toThrow('SDK loaded');
  });
  jest.dontMock('unleash-client/lib/client');
});
