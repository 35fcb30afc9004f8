import { Queue, QueueEvents, Worker } from 'bullmq';
import { createRedis } from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { JobWaiter, JobWaitTimeoutError } from '../src/job-waiter';

const { redis, prefix, cleanup } = testRedis('job-waiter');
const blocking = () => createRedis(TEST_REDIS_URL, { blocking: true, name: 'test-job-waiter' });

type Job = { n: number; fail?: boolean; hold?: boolean };
let queue: Queue<Job, { doubled: number }>;
let events: QueueEvents;
let worker: Worker<Job, { doubled: number }>;
const connections = [blocking(), blocking()];

beforeAll(async () => {
  queue = new Queue('jobs', { connection: redis, prefix });
  events = new QueueEvents('jobs', { connection: connections[0]!, prefix });
  await events.waitUntilReady();
  worker = new Worker<Job, { doubled: number }>(
    'jobs',
    async (job) => {
      if (job.data.fail) throw new Error(`job ${job.data.n} broke`);
      if (job.data.hold) await new Promise((r) => setTimeout(r, 1_000));
      return { doubled: job.data.n * 2 };
    },
    { connection: connections[1]!, prefix, concurrency: 50 },
  );
  await worker.waitUntilReady();
});

afterAll(async () => {
  await worker.close();
  await events.close();
  await queue.close();
  await Promise.all(connections.map((c) => c.quit()));
  await cleanup();
});

test('each caller gets its own job result, many at once, and nothing stays registered', async () => {
  const waiter = new JobWaiter<{ doubled: number }>([events]);
  const results = await Promise.all(
    Array.from({ length: 100 }, (_, n) => waiter.run((jobId) => queue.add('double', { n }, { jobId }), 10_000)),
  );
  expect(results.map((r) => r.doubled)).toEqual(Array.from({ length: 100 }, (_, n) => n * 2));
  expect(waiter.size).toBe(0);
});

test('a job that fails rejects its caller with the failure reason', async () => {
  const waiter = new JobWaiter<{ doubled: number }>([events]);
  await expect(waiter.run((jobId) => queue.add('double', { n: 7, fail: true }, { jobId }), 10_000)).rejects.toThrow('job 7 broke');
  expect(waiter.size).toBe(0);
});

test('a job slower than the wait rejects with JobWaitTimeoutError and is forgotten', async () => {
  const waiter = new JobWaiter<{ doubled: number }>([events]);
  const err = await waiter.run((jobId) => queue.add('double', { n: 1, hold: true }, { jobId }), 100).catch((e: unknown) => e);
  expect((err as Error).name).toBe(JobWaitTimeoutError.name);
  expect(waiter.size).toBe(0);
});

test('an add that fails rejects with its own error and registers nothing', async () => {
  const waiter = new JobWaiter<{ doubled: number }>([events]);
  await expect(waiter.run(() => Promise.reject(new Error('redis is away')), 10_000)).rejects.toThrow('redis is away');
  expect(waiter.size).toBe(0);
});
