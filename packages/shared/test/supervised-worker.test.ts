import { Queue, type Worker } from 'bullmq';
import type Redis from 'ioredis';
import { queuePrefix } from '../src/jobs';
import { PartitionedWorker } from '../src/queues/partitioned-worker';
import { SupervisedWorker } from '../src/queues/supervised-worker';
import { createRedis } from '../src/redis';
import { TEST_REDIS_URL, testRedis, waitFor } from '../src/testing';

/**
 * A Worker that stops fetching while its queue fills is replaced, on real Redis. The stall is made
 * with `stall` below: from outside it looks exactly like the one seen after a cluster master
 * restart (jobs waiting, nothing active, nothing fetched).
 */

const { redis, prefix: namespace, cleanup } = testRedis('supervised-worker');
const closers: Array<() => Promise<unknown>> = [];
let queues = 0;

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(cleanup);

const blocking = (): Redis => {
  const c = createRedis(TEST_REDIS_URL, { blocking: true, name: 'test-supervised-worker' });
  closers.push(() => c.quit().catch(() => undefined));
  return c;
};

/**
 * Stops a Worker fetching without touching its connection: plain `pause()` reconnects the blocking
 * connection, which on a cluster can hang (the very bug the watchdog is for). The marker wakes its
 * blocking read, so its loop sees the pause and ends before the test adds jobs.
 */
async function stall(w: Worker): Promise<void> {
  await w.pause(true);
  await redis.zadd(`${w.opts.prefix}:${w.name}:marker`, 0, '0');
  await (w as unknown as { mainLoopRunning: Promise<void> | null }).mainLoopRunning;
}

function openQueue() {
  const name = `sup-${++queues}`;
  const queue = new Queue(name, { connection: redis, prefix: queuePrefix(namespace), defaultJobOptions: { attempts: 1 } });
  closers.push(() => queue.close());
  return { name, queue };
}

test('a Worker that stopped fetching is replaced, keeps its listeners, and the waiting jobs run once each', async () => {
  const { name, queue } = openQueue();
  const runs = new Map<string, number>();
  const replaced: Array<{ waiting: number }> = [];
  const sw = new SupervisedWorker<{ n: number }, number>(
    name,
    async (job) => {
      runs.set(job.id!, (runs.get(job.id!) ?? 0) + 1);
      return job.data.n;
    },
    { connection: blocking(), prefix: queuePrefix(namespace), concurrency: 2, watchMs: 150, onReplaced: (info) => replaced.push(info) },
  );
  closers.push(() => sw.close(true));
  let completed = 0;
  sw.on('completed', () => completed++);
  await sw.waitUntilReady();

  await queue.add('j', { n: 0 }, { jobId: 'before' });
  expect(await waitFor(() => completed === 1)).toBe(true);
  expect(sw.replacements).toBe(0);

  const first = sw.worker;
  await stall(first);
  await queue.addBulk(Array.from({ length: 5 }, (_, i) => ({ name: 'j', data: { n: i + 1 }, opts: { jobId: `after-${i}` } })));
  expect(await waitFor(() => completed === 6, 10_000)).toBe(true);
  expect(sw.replacements).toBe(1);
  expect(sw.worker).not.toBe(first);
  expect(replaced).toEqual([expect.objectContaining({ queue: name, waiting: 5, replacements: 1 })]);
  expect([...runs.values()].every((n) => n === 1)).toBe(true);
  expect(runs.size).toBe(6);
});

test('a Worker that is busy or has nothing waiting is left alone', async () => {
  const { name, queue } = openQueue();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let started = 0;
  const sw = new SupervisedWorker<unknown, void>(
    name,
    async () => {
      started++;
      await gate;
    },
    { connection: blocking(), prefix: queuePrefix(namespace), concurrency: 1, watchMs: 100 },
  );
  closers.push(() => sw.close(true));
  await sw.waitUntilReady();
  // Idle with an empty queue for many checks.
  await new Promise((r) => setTimeout(r, 600));
  expect(sw.replacements).toBe(0);
  // Its one slot taken by a long job while two more wait: busy, not stalled.
  await queue.addBulk([0, 1, 2].map((i) => ({ name: 'j', data: {}, opts: { jobId: `busy-${i}` } })));
  expect(await waitFor(() => started === 1)).toBe(true);
  await new Promise((r) => setTimeout(r, 600));
  expect(sw.replacements).toBe(0);
  release();
  expect(await waitFor(() => started === 3)).toBe(true);
  expect(sw.replacements).toBe(0);
});

test('PartitionedWorker supervises each partition on its own', async () => {
  const name = `sup-${++queues}`;
  const worker = new PartitionedWorker<{ n: number }, number>(name, async (job) => job.data.n, { namespace, partitions: 2, concurrency: 2, connection: blocking(), watchMs: 150 });
  closers.push(() => worker.close(true));
  await worker.waitUntilReady();
  const [stuck, fine] = worker.partitions;
  await stall(stuck!.worker);
  expect(stuck!.replacements + fine!.replacements).toBe(0);
  const q = new Queue(name, { connection: redis, prefix: stuck!.worker.opts.prefix, defaultJobOptions: { attempts: 1 } });
  closers.push(() => q.close());
  await q.add('j', { n: 1 });
  expect(await waitFor(async () => (await q.getCompletedCount()) === 1, 10_000)).toBe(true);
  expect(stuck!.replacements).toBe(1);
  expect(fine!.replacements).toBe(0);
  expect(worker.workers[0]).toBe(stuck!.worker);
});

test('jobs that are due but not in the wait list count: a retry past its delay and a prioritized job; one not yet due does not', async () => {
  const { name, queue } = openQueue();
  const ran: string[] = [];
  const sw = new SupervisedWorker<unknown, void>(name, async (job) => void ran.push(job.id!), {
    connection: blocking(),
    prefix: queuePrefix(namespace),
    concurrency: 2,
    watchMs: 150,
  });
  closers.push(() => sw.close(true));
  await sw.waitUntilReady();

  // Due in a minute: the idle Worker is healthy, whatever the checks see.
  await queue.add('later', {}, { jobId: 'later', delay: 60_000 });
  await new Promise((r) => setTimeout(r, 700));
  expect(sw.replacements).toBe(0);

  // Stalled with only a delayed job that comes due, then only a prioritized one.
  await stall(sw.worker);
  await queue.add('soon', {}, { jobId: 'soon', delay: 100 });
  expect(await waitFor(() => ran.includes('soon'), 10_000)).toBe(true);
  expect(sw.replacements).toBe(1);
  await stall(sw.worker);
  await queue.add('urgent', {}, { jobId: 'urgent', priority: 1 });
  expect(await waitFor(() => ran.includes('urgent'), 10_000)).toBe(true);
  expect(sw.replacements).toBe(2);
  expect(ran).toEqual(['soon', 'urgent']);
});
