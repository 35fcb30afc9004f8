import { createRedis, mastersOf } from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { StreamReader } from '../src/stream-reader';

const { redis, prefix, cleanup } = testRedis('stream-reader');
afterAll(cleanup);

/** Connections this test's reader holds, by the client name it gives them (on every master of a cluster). */
async function connectionsNamed(name: string): Promise<number> {
  await redis.ping();
  let n = 0;
  for (const node of mastersOf(redis)) n += ((await node.client('LIST')) as string).split('\n').filter((l) => l.includes(` name=${name} `)).length;
  return n;
}
/** One client's connections: one on a single node, at most one per master on a cluster. */
const oneClient = () => mastersOf(redis).length;

test('20 open streams are read over one connection, each gets its own entries in order, and the connection closes when none is open', async () => {
  const name = `sr-${Date.now()}`;
  const own = createRedis(TEST_REDIS_URL, { name });
  await own.ping();
  // A cluster client opens a node's connection when it first needs it: open them all now, so
  // what changes later is the reader's.
  await Promise.all(mastersOf(own).map((node) => node.ping()));
  const base = await connectionsNamed(name);
  const reader = new StreamReader(own, prefix);
  const keys = Array.from({ length: 20 }, (_, i) => `${prefix}:out:${i}`);
  const readings = keys.map((k) => reader.read(k));
  // Written after the read is blocked on the first ones: opening more must wake it.
  await new Promise((r) => setTimeout(r, 50));
  const late = reader.read(`${prefix}:out:late`);
  for (const [i, k] of [...keys, `${prefix}:out:late`].entries()) {
    await redis.xadd(k, '*', 'item', `a${i}`);
    await redis.xadd(k, '*', 'item', `b${i}`);
  }
  const got = await Promise.all(
    [...readings, late].map(async (r) => {
      const seen: string[] = [];
      for (let tries = 0; seen.length < 2 && tries < 20; tries++) for (const f of await r.next(500)) seen.push(f[1]!);
      return seen;
    }),
  );
  expect(got).toEqual([...keys, 'late'].map((_, i) => [`a${i}`, `b${i}`]));
  // The client itself plus one reading connection (a duplicate keeps the client's name).
  const reading = (await connectionsNamed(name)) - base;
  expect(reading).toBeGreaterThanOrEqual(1);
  expect(reading).toBeLessThanOrEqual(oneClient());
  expect(reader.size).toBe(21);
  for (const r of [...readings, late]) r.close();
  expect(reader.size).toBe(0);
  // The blocked read ends within its block; then the reading connection is gone.
  let left = base + reading;
  for (let i = 0; i < 40 && left > base; i++) {
    await new Promise((r) => setTimeout(r, 100));
    left = await connectionsNamed(name);
  }
  expect(left).toBe(base);

  // Streams opened again after the reader went idle, and one opened the moment the last closes,
  // are read too.
  for (let round = 0; round < 3; round++) {
    const a = reader.read(`${prefix}:again:${round}:a`);
    a.close();
    const b = reader.read(`${prefix}:again:${round}:b`);
    await redis.xadd(`${prefix}:again:${round}:b`, '*', 'item', `r${round}`);
    let seen: string[] = [];
    for (let tries = 0; seen.length === 0 && tries < 10; tries++) seen = (await b.next(500)).map((f) => f[1]!);
    expect(seen).toEqual([`r${round}`]);
    b.close();
    await new Promise((r) => setTimeout(r, round * 600));
  }
  await own.quit();
});
