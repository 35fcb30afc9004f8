import { z } from 'zod';
import {
  CacheDirectiveError,
  cacheKey,
  type CacheStats,
  CacheSettingsStore,
  canonicalJson,
  DEFAULT_CACHE_SETTINGS,
  parseCacheDirective,
  ResponseCache,
  tenantPrefix,
  ttlFor,
} from '../src/cache';
import { projectNamespace, tenantShardNamespaces, tenantShardOf } from '../src/tenant-shards';
import { testRedis } from '../src/testing';

describe('cache keys', () => {
  const alice = { project: 'web', user: 'alice' };

  it('hash the canonical request: field order never matters, every field and nested value does', () => {
    const a = cacheKey('ns', alice, 'chat', 'default', { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0.2 });
    const b = cacheKey('ns', alice, 'chat', 'default', { temperature: 0.2, messages: [{ content: 'hi', role: 'user' }], model: 'm' });
    expect(b.hash).toBe(a.hash);
    expect(canonicalJson({ b: 1, a: { d: undefined, c: [2, 1] } })).toBe('{"a":{"c":[2,1]},"b":1}');
    for (const changed of [
      { model: 'm2', messages: [{ role: 'user', content: 'hi' }], temperature: 0.2 },
      { model: 'm', messages: [{ role: 'user', content: 'hi!' }], temperature: 0.2 },
      { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0.3 },
      { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0.2, tools: [] },
      { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0.2, response_format: { type: 'json_object' } },
    ]) {
      expect(cacheKey('ns', alice, 'chat', 'default', changed).hash).not.toBe(a.hash);
    }
  });

  it('start with the tenant, then kind and partition; ids cannot run into each other or widen a purge', () => {
    const k = cacheKey('{tg}', alice, 'rag', 'exp-1', { q: 1 }, 1);
    expect(k.key).toMatch(/^\{tg\}:cache:t:web:alice:rag:exp-1:[a-f0-9]{64}$/);
    // With tenant shards, under the project's shard: one project's entries in one slot.
    const sharded = cacheKey('{tg}', alice, 'rag', 'exp-1', { q: 1 }, 4);
    expect(sharded.key).toBe(`${projectNamespace('{tg}', 'web', 4)}${k.key.slice('{tg}'.length)}`);
    expect(projectNamespace('{tg}', 'web', 4)).toBe(tenantShardNamespaces('{tg}', 4)[tenantShardOf('web', 4)]);
    expect(k.lock).toBe(`${k.key}:lock`);
    // "a" + user "b:c" and project "a:b" + user "c" differ, and a project "*" matches only itself.
    expect(cacheKey('ns', { project: 'a', user: 'b:c' }, 'chat', 'd', 1).key).not.toBe(cacheKey('ns', { project: 'a:b', user: 'c' }, 'chat', 'd', 1).key);
    expect(tenantPrefix('ns', '*', undefined, 1)).toBe('ns:cache:t:%2A:');
    for (const other of [{ project: 'web', user: 'bob' }, { project: 'mobile', user: 'alice' }]) {
      expect(cacheKey('ns', other, 'chat', 'default', { q: 1 }).key).not.toBe(cacheKey('ns', alice, 'chat', 'default', { q: 1 }).key);
    }
  });
});

describe('Cache-Control and the cache namespace header', () => {
  it('maps no-store to bypass, no-cache to refresh and reads max-age', () => {
    expect(parseCacheDirective(undefined, undefined)).toEqual({ mode: 'default', partition: 'default' });
    expect(parseCacheDirective('no-store', undefined).mode).toBe('bypass');
    expect(parseCacheDirective('No-Cache, max-age=60', 'exp.b')).toEqual({ mode: 'refresh', maxAgeSeconds: 60, partition: 'exp.b' });
    // no-store wins whatever the order.
    expect(parseCacheDirective('no-store, no-cache', undefined).mode).toBe('bypass');
    expect(parseCacheDirective('no-cache, no-store', undefined).mode).toBe('bypass');
    expect(parseCacheDirective('max-age="30", only-if-cached', undefined).maxAgeSeconds).toBe(30);
  });

  it('refuses a malformed max-age or namespace with a clear message', () => {
    expect(() => parseCacheDirective('max-age=-1', undefined)).toThrow(CacheDirectiveError);
    expect(() => parseCacheDirective('max-age=soon', undefined)).toThrow(/whole number of seconds/);
    expect(() => parseCacheDirective(undefined, 'has space')).toThrow(/x-tollgate-cache-namespace/);
    expect(() => parseCacheDirective(undefined, 'x'.repeat(65))).toThrow(CacheDirectiveError);
  });

  it('TTLs: the request max-age, else the project default, never past the cap', () => {
    expect(ttlFor('rag', DEFAULT_CACHE_SETTINGS, undefined)).toBe(300);
    expect(ttlFor('vision', DEFAULT_CACHE_SETTINGS, undefined)).toBe(3600);
    expect(ttlFor('chat', DEFAULT_CACHE_SETTINGS, undefined)).toBe(0);
    expect(ttlFor('chat', DEFAULT_CACHE_SETTINGS, 120)).toBe(120);
    expect(ttlFor('chat', { ...DEFAULT_CACHE_SETTINGS, max_ttl_seconds: 60 }, 120)).toBe(60);
  });
});

describe('the store, on real Redis', () => {
  const ctx = testRedis('cache-unit');
  afterAll(() => ctx.cleanup());
  const schema = z.object({ answer: z.string() });
  const key = cacheKey(ctx.prefix, { project: 'p', user: 'u' }, 'chat', 'default', { q: 'x' });

  it('stores with a TTL, reads back with the age, honours max-age and ignores what no longer parses', async () => {
    const cache = new ResponseCache(ctx.redis, ctx.prefix);
    expect(await cache.get(key, schema)).toBeUndefined();
    await cache.put(key, { answer: '42' }, 60);
    expect(await ctx.redis.ttl(key.key)).toBeGreaterThan(55);
    expect(await cache.get(key, schema)).toMatchObject({ value: { answer: '42' }, age_seconds: 0 });
    await ctx.redis.set(key.key, JSON.stringify({ v: { answer: 'old' }, at: new Date(Date.now() - 120_000).toISOString() }));
    expect(await cache.get(key, schema, 60)).toBeUndefined();
    expect((await cache.get(key, schema, 600))?.age_seconds).toBeGreaterThanOrEqual(119);
    await ctx.redis.set(key.key, JSON.stringify({ v: { answer: 7 }, at: new Date().toISOString() }));
    expect(await cache.get(key, schema)).toBeUndefined();
    await cache.put(key, { answer: 'never' }, 0);
    expect(await cache.get(key, schema)).toBeUndefined();
  });

  it('a claim is exclusive until released by its owner; a waiter gets the holder\'s entry, or nothing if it gave up', async () => {
    const cache = new ResponseCache(ctx.redis, ctx.prefix);
    const k = cacheKey(ctx.prefix, { project: 'p', user: 'u' }, 'chat', 'default', { q: 'claim' });
    const token = await cache.claim(k, 5_000, 'one');
    expect(token).toBe('one');
    expect(await cache.claim(k, 5_000, 'two')).toBeUndefined();
    expect(await cache.claim(k, 5_000, 'one')).toBe('one');
    const waiting = cache.awaitOther(k, schema, Date.now() + 5_000);
    await cache.put(k, { answer: 'from the holder' }, 60);
    expect((await waiting)?.value.answer).toBe('from the holder');
    await cache.release(k, 'two');
    expect(await ctx.redis.exists(k.lock)).toBe(1);
    await cache.release(k, 'one');
    const other = cacheKey(ctx.prefix, { project: 'p', user: 'u' }, 'chat', 'default', { q: 'gave up' });
    await cache.claim(other, 5_000, 'x');
    const gaveUp = cache.awaitOther(other, schema, Date.now() + 5_000);
    await cache.release(other, 'x');
    expect(await gaveUp).toBeUndefined();
  });

  it('per tenant shard: each project\'s entries and figures in its shard, the overall figures summed over every shard, a purge of one project only', async () => {
    const shards = 4;
    // A namespace of its own (inside the file's, so its cleanup covers it): the tests above count in the file's.
    const ns = ctx.prefix.replace(/\}$/, ':sharded}');
    const projects = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'];
    const a = projects[0]!;
    const b = projects.find((p) => tenantShardOf(p, shards) !== tenantShardOf(a, shards))!;
    const cache = new ResponseCache(ctx.redis, ns, shards);
    const ka = cacheKey(ns, { project: a, user: 'u' }, 'chat', 'default', { q: 'shard' }, shards);
    const kb = cacheKey(ns, { project: b, user: 'u' }, 'chat', 'default', { q: 'shard' }, shards);
    expect(ka.key.startsWith(`${projectNamespace(ns, a, shards)}:cache:t:`)).toBe(true);
    expect(kb.key.startsWith(`${projectNamespace(ns, b, shards)}:cache:t:`)).toBe(true);
    expect(projectNamespace(ns, a, shards)).not.toBe(projectNamespace(ns, b, shards));
    await cache.put(ka, { answer: 'a' }, 60);
    await cache.put(kb, { answer: 'b' }, 60);
    await cache.record(ka, 'HIT', 25);
    await cache.record(kb, 'MISS');
    await cache.record(kb, 'HIT', 5);
    const chat = (rows: CacheStats[]) => rows.find((r) => r.kind === 'chat')!;
    expect(chat(await cache.stats(a))).toMatchObject({ hits: 1, misses: 0, stores: 1, saved_micros: 25 });
    expect(chat(await cache.stats(b))).toMatchObject({ hits: 1, misses: 1, stores: 1, saved_micros: 5 });
    expect(chat(await cache.stats())).toMatchObject({ hits: 2, misses: 1, stores: 2, saved_micros: 30, hit_ratio: 2 / 3 });
    expect(await cache.purge(a)).toBe(1);
    expect(await cache.get(ka, schema)).toBeUndefined();
    expect((await cache.get(kb, schema))?.value.answer).toBe('b');
  });

  it('settings merge over the defaults and are validated', async () => {
    const store = new CacheSettingsStore(ctx.redis, ctx.prefix, DEFAULT_CACHE_SETTINGS, 0);
    expect(await store.get('p')).toEqual(DEFAULT_CACHE_SETTINGS);
    expect(await store.set('p', { chat_ttl_seconds: 30 })).toEqual({ ...DEFAULT_CACHE_SETTINGS, chat_ttl_seconds: 30 });
    expect(await store.set('p', { max_ttl_seconds: 10 })).toMatchObject({ chat_ttl_seconds: 30, max_ttl_seconds: 10 });
    await expect(store.set('p', { chat_ttl_seconds: -1 })).rejects.toThrow();
    expect((await store.get('p')).chat_ttl_seconds).toBe(30);
  });
});
