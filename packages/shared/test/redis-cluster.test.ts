import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { clusterNodes, createRedis, deleteByPrefix, isCluster, mastersOf, scanKeys } from '../src/redis';

// A real 3-master cluster of this file's own (its own ports), started from the redis-server on PATH.
// The script reads its port when loaded; the variable is gone before any other file runs.
process.env.REDIS_CLUSTER_PORT = '7210';
const cluster = require('../../../scripts/redis-cluster.js') as { nodes: string; start(): Promise<void>; stop(): void };
delete process.env.REDIS_CLUSTER_PORT;

let redis: Redis;
const prefix = `test:cluster:${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  await cluster.start();
  // createRedis reads REDIS_CLUSTER_NODES; set only while this file's connection is made.
  process.env.REDIS_CLUSTER_NODES = cluster.nodes;
  try {
    redis = createRedis('redis://127.0.0.1:6379', { name: 'test-cluster' });
  } finally {
    delete process.env.REDIS_CLUSTER_NODES;
  }
}, 60_000);

afterAll(async () => {
  await redis?.quit();
  cluster.stop();
});

test('REDIS_CLUSTER_NODES is host:port pairs; anything else is refused by name', () => {
  expect(clusterNodes({})).toBeNull();
  expect(clusterNodes({ REDIS_CLUSTER_NODES: ' 10.0.0.1:7000, redis-1:7001,[::1]:7002' })).toEqual([
    { host: '10.0.0.1', port: 7000 },
    { host: 'redis-1', port: 7001 },
    { host: '::1', port: 7002 },
  ]);
  expect(() => clusterNodes({ REDIS_CLUSTER_NODES: 'redis-1' })).toThrow(/"redis-1" is not host:port/);
});

test('on a cluster, keys of many slots are written, found by a scan over every master, and deleted by prefix', async () => {
  expect(isCluster(redis)).toBe(true);
  await redis.ping(); // connects, so the masters are known
  const masters = mastersOf(redis);
  expect(masters).toHaveLength(3);
  const keys = Array.from({ length: 60 }, (_, i) => `${prefix}:{t${i}}:k`);
  for (const key of keys) await redis.set(key, '1');
  const perMaster = await Promise.all(masters.map((m) => m.dbsize()));
  expect(perMaster.every((n) => n > 0)).toBe(true); // 60 slots over 3 masters: each holds some

  const found: string[] = [];
  for await (const page of scanKeys(redis, `${prefix}:*`, 7)) found.push(...page);
  expect(found.sort()).toEqual([...keys].sort());
  expect(await deleteByPrefix(redis, prefix)).toBe(60);
  expect(await redis.exists(...keys.slice(0, 1))).toBe(0);

  // A connection that has sent nothing yet still finds every master's keys.
  await redis.set(`${prefix}:{fresh}:k`, '1');
  const fresh = redis.duplicate();
  try {
    expect(await deleteByPrefix(fresh, prefix)).toBe(1);
  } finally {
    fresh.disconnect();
  }

  // A duplicate (stream readers, alert streams) is a cluster connection too.
  const dup = redis.duplicate();
  try {
    expect(isCluster(dup)).toBe(true);
    await dup.set(`${prefix}:{x}:dup`, 'y');
    expect(await redis.get(`${prefix}:{x}:dup`)).toBe('y');
  } finally {
    await deleteByPrefix(redis, prefix);
    dup.disconnect();
  }
});

test('a service connection asking for automatic pipelining runs scripts and stream commands for every master at once', async () => {
  // The services ask for enableAutoPipelining; on a cluster ioredis would group EVALSHA by its sha
  // (redis/ioredis#2109) and fail mixed pipelines, so a cluster connection never pipelines on its own.
  process.env.REDIS_CLUSTER_NODES = cluster.nodes;
  let svc: Redis;
  try {
    svc = createRedis('redis://127.0.0.1:6379', { name: 'test-cluster-autopipe', enableAutoPipelining: true });
  } finally {
    delete process.env.REDIS_CLUSTER_NODES;
  }
  try {
    // As the ledger's batch script is called: the key count first, then the keys.
    svc.defineCommand('clusterTestIncr', { lua: "return redis.call('INCR', KEYS[1])" });
    const incrN = (svc as unknown as Record<string, (...args: string[]) => Promise<number>>).clusterTestIncr!.bind(svc);
    const incr = (key: string) => incrN('1', key);
    const keys = Array.from({ length: 90 }, (_, i) => `${prefix}:{a${i}}:n`);
    const out = await Promise.all([...keys.map((k) => incr(k)), ...keys.map((k) => svc.xadd(`${k}:s`, '*', 'f', 'v'))]);
    expect(out.slice(0, keys.length)).toEqual(keys.map(() => 1));
    expect(out.slice(keys.length).every((id) => typeof id === 'string')).toBe(true);
    // Commands whose first argument is not their key (XREAD COUNT .. STREAMS key, EVALSHA sha n key).
    const sha = String(await mastersOf(svc)[0]!.script('LOAD', "return redis.call('GET', KEYS[1])"));
    await Promise.all(mastersOf(svc).map((m) => m.script('LOAD', "return redis.call('GET', KEYS[1])")));
    const mixed = await Promise.all([
      ...keys.map((k) => svc.xread('COUNT', 1, 'STREAMS', `${k}:s`, '0')),
      ...keys.map((k) => svc.evalsha(sha, 1, k)),
      ...keys.map((k) => svc.get(k)),
    ]);
    expect(mixed.slice(keys.length).every((v) => v === '1')).toBe(true);
  } finally {
    await svc.quit();
    await deleteByPrefix(redis, prefix);
  }
});
