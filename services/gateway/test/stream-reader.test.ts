import { chatReplyKey, createRedis, mastersOf } from '@tollgate/shared';
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

test('20 open streams are read from one reply stream over one connection, each gets its own items in order, and the connection closes when none is open', async () => {
  const name = `sr-${Date.now()}`;
  const own = createRedis(TEST_REDIS_URL, { name });
  await own.ping();
  // A cluster client opens a node's connection when it first needs it: open them all now, so
  // what changes later is the reader's.
  await Promise.all(mastersOf(own).map((node) => node.ping()));
  const base = await connectionsNamed(name);
  const reader = new StreamReader(own, prefix);
  const key = chatReplyKey(prefix, reader.replyTo);
  const write = (job: string, item: string) => redis.xadd(key, '*', 'job', job, 'item', item);
  const jobs = Array.from({ length: 20 }, (_, i) => `job-${i}`);
  const readings = jobs.map((j) => reader.read(j));
  // Opened while the read is blocked: its items are on the same key, so no wake-up is needed.
  await new Promise((r) => setTimeout(r, 50));
  const late = reader.read('job-late');
  // An item of a job nobody reads is dropped, not handed to another.
  await write('job-gone', 'stray');
  for (const [i, j] of [...jobs, 'job-late'].entries()) {
    await write(j, `a${i}`);
    await write(j, `b${i}`);
  }
  const got = await Promise.all(
    [...readings, late].map(async (r) => {
      const seen: string[] = [];
      for (let tries = 0; seen.length < 2 && tries < 20; tries++) seen.push(...(await r.next(500)));
      return seen;
    }),
  );
  expect(got).toEqual([...jobs, 'late'].map((_, i) => [`a${i}`, `b${i}`]));
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
  // What was read is trimmed from the reply stream (all but the last entry read).
  expect(await redis.xlen(key)).toBeLessThanOrEqual(1);

  // Streams opened again after the reader went idle, and one opened the moment the last closes,
  // are read too.
  for (let round = 0; round < 3; round++) {
    const a = reader.read(`again-${round}-a`);
    a.close();
    const b = reader.read(`again-${round}-b`);
    await write(`again-${round}-b`, `r${round}`);
    const seen: string[] = [];
    for (let tries = 0; seen.length < 1 && tries < 10; tries++) seen.push(...(await b.next(500)));
    expect(seen).toEqual([`r${round}`]);
    b.close();
    await new Promise((r) => setTimeout(r, round * 600));
  }
  await own.quit();
});
