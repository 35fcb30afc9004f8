import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import calculateSlot from 'cluster-key-slot';
import type Redis from 'ioredis';
import { ConfigError, DEFAULT_CLUSTER_QUEUE_PARTITIONS, loadConfig, MAX_QUEUE_PARTITIONS, queuePartitionsFrom } from '../src/config';
import { queuePrefix, WORKER_RECOVERY } from '../src/jobs';
import { type JobCountSource, PartitionedQueue } from '../src/queues/partitioned-queue';
import { PartitionedWorker } from '../src/queues/partitioned-worker';
import { queuePartitionOf, queuePartitionPrefixes, rangeOfSlot, slotRange, splitConcurrency } from '../src/queues/partitions';
import { createRedis } from '../src/redis';
import { keysMatching, TEST_REDIS_URL, testRedis, waitFor } from '../src/testing';

/** Queue partitions (QUEUE_PARTITIONS) on real Redis: placement, spread, dedupe, exactly-once, recovery. */

const ROOT = join(__dirname, '..', '..', '..');
const { redis, prefix: namespace, cleanup } = testRedis('jobs-partitions');
const closers: Array<() => Promise<unknown>> = [];
const children: ChildProcess[] = [];
let queues = 0;

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(cleanup);

const blocking = (): Redis => {
  const c = createRedis(TEST_REDIS_URL, { blocking: true, name: 'test-jobs-partitions' });
  closers.push(() => c.quit().catch(() => undefined));
  return c;
};

/** A fresh queue name per test, so one test's jobs and workers never meet another's. */
function openQueue<D>(partitions = 3) {
  const name = `work-${++queues}`;
  const queue = new PartitionedQueue<D, unknown>(name, { namespace, partitions, connection: redis, defaultJobOptions: { attempts: 1 } });
  closers.push(() => queue.close());
  return { name, queue };
}

function startWorker<D, R>(name: string, processor: (job: { id?: string; data: D }) => Promise<R>, opts: { partitions?: number; concurrency?: number; name?: string } = {}) {
  const worker = new PartitionedWorker<D, R>(name, processor, { namespace, partitions: opts.partitions ?? 3, concurrency: opts.concurrency ?? 6, connection: blocking(), ...(opts.name && { name: opts.name }) });
  closers.push(() => worker.close(true));
  return worker;
}

/** Ids whose partitions are, in order, 0, 1, ..., n-1, repeated `each` times. */
function idsCovering(n: number, each: number, tag: string): string[] {
  const byPartition: string[][] = Array.from({ length: n }, () => []);
  for (let i = 0; byPartition.some((ids) => ids.length < each); i++) {
    const id = `${tag}-${i}`;
    const p = queuePartitionOf(id, n);
    if (byPartition[p]!.length < each) byPartition[p]!.push(id);
  }
  return Array.from({ length: each }, (_, k) => byPartition.map((ids) => ids[k]!)).flat();
}

const completed = async (q: JobCountSource) => (await q.getJobCounts('completed')).completed ?? 0;

describe('QUEUE_PARTITIONS', () => {
  it('is 1 on one Redis and 6 on a cluster unless set, and a bad value stops start-up naming it', () => {
    expect(loadConfig({}).queuePartitions).toBe(1);
    expect(loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000' }).queuePartitions).toBe(DEFAULT_CLUSTER_QUEUE_PARTITIONS);
    expect(loadConfig({ REDIS_CLUSTER_NODES: '  ' }).queuePartitions).toBe(1);
    expect(loadConfig({ QUEUE_PARTITIONS: '3', REDIS_CLUSTER_NODES: '10.0.0.1:7000' }).queuePartitions).toBe(3);
    expect(loadConfig({ QUEUE_PARTITIONS: String(MAX_QUEUE_PARTITIONS) }).queuePartitions).toBe(64);
    expect(queuePartitionsFrom({ QUEUE_PARTITIONS: '12', GATEWAY_PORT: 'not a port' })).toBe(12);
    for (const bad of ['0', '65', '2.5', 'six', '-1']) {
      let err: unknown;
      try {
        loadConfig({ QUEUE_PARTITIONS: bad });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toBe(`Invalid configuration: QUEUE_PARTITIONS: expected an integer 1-64, got "${bad}"`);
    }
  });
});

describe('placement', () => {
  it('keeps one partition on the namespace\'s own queue prefix, as before partitions', () => {
    expect(queuePartitionPrefixes('{tollgate}', 1)).toEqual(['{tollgate}:q']);
    expect(queuePartitionPrefixes(namespace, 1)).toEqual([queuePrefix(namespace)]);
    expect(queuePartitionOf('anything', 1)).toBe(0);
  });

  it.each([3, 6, 12])('puts each of %i partitions under its own tag, in its own equal share of the slots, one of them the home queue', (n) => {
    for (const ns of ['{tollgate}', namespace]) {
      const prefixes = queuePartitionPrefixes(ns, n);
      expect(prefixes).toHaveLength(n);
      expect(prefixes).toContain(queuePrefix(ns));
      const tags = prefixes.map((p) => /^\{([^}]+)\}:q$/.exec(p)?.[1]);
      expect(new Set(tags).size).toBe(n);
      prefixes.forEach((p, i) => {
        const slot = calculateSlot(p);
        const [first, last] = slotRange(i, n);
        expect([p, slot >= first && slot <= last]).toEqual([p, true]);
        if (p !== queuePrefix(ns)) expect(p.startsWith(`${ns.slice(0, -1)}:q:${i}:`)).toBe(true);
      });
    }
  });

  it('shares the slots out as redis-cli --cluster create does for 3 masters', () => {
    expect([0, 1, 2].map((i) => slotRange(i, 3))).toEqual([[0, 5460], [5461, 10922], [10923, 16383]]);
    // 6 partitions: two in each of those masters' ranges.
    expect([0, 1, 2, 3, 4, 5].map((i) => rangeOfSlot(slotRange(i, 6)[0], 3))).toEqual([0, 0, 1, 1, 2, 2]);
    expect([0, 1, 2, 3, 4, 5].map((i) => rangeOfSlot(slotRange(i, 6)[1], 3))).toEqual([0, 0, 1, 1, 2, 2]);
  });

  it('hashes a job id the same way every time (a rolling deploy must agree), and spreads ids evenly', () => {
    // Pinned to FNV-1a's published vectors ('a' 0xe40c292c, 'foobar' 0xbf9cf968): a change here
    // moves jobs between partitions while gateways of two releases run side by side.
    for (const n of [3, 6, 64]) {
      expect([n, queuePartitionOf('a', n), queuePartitionOf('foobar', n)]).toEqual([n, 0xe40c292c % n, 0xbf9cf968 % n]);
    }
    expect(queuePartitionOf('chat-1', 6)).toBe(0x6e1ee9f9 % 6);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3_000; i++) counts[queuePartitionOf(`job-${i}`, 3)]!++;
    for (const c of counts) expect(c).toBeGreaterThan(900);
  });
});

describe('splitConcurrency', () => {
  it('shares a process\'s concurrency out evenly, never below 1 per partition, never above the total when it can', () => {
    expect(splitConcurrency(200, 1)).toEqual([200]);
    expect(splitConcurrency(200, 6)).toEqual([34, 34, 33, 33, 33, 33]);
    expect(splitConcurrency(7, 3)).toEqual([3, 2, 2]);
    expect(splitConcurrency(6, 6)).toEqual([1, 1, 1, 1, 1, 1]);
    // Fewer slots than partitions: each partition keeps a reader (PartitionedWorker holds the total).
    expect(splitConcurrency(4, 6)).toEqual([1, 1, 1, 1, 1, 1]);
    for (const [total, n] of [[200, 6], [7, 3], [1000, 64], [64, 64]] as const) {
      expect(splitConcurrency(total, n).reduce((a, b) => a + b, 0)).toBe(total);
    }
    expect(() => splitConcurrency(0, 3)).toThrow(RangeError);
    expect(() => splitConcurrency(4, 65)).toThrow(RangeError);
  });
});

describe('a partitioned queue on Redis', () => {
  it('with one partition writes the very keys a plain BullMQ queue writes', async () => {
    const { name, queue } = openQueue<{ n: number }>(1);
    const plainName = `${name}-plain`;
    const plain = new Queue(plainName, { connection: redis, prefix: queuePrefix(namespace), defaultJobOptions: { attempts: 1 } });
    closers.push(() => plain.close());
    const a = await queue.add('job', { n: 1 });
    const b = await plain.add('job', { n: 1 });
    // BullMQ's own ids, as before partitions.
    expect([a.id, b.id]).toEqual(['1', '1']);
    await queue.add('job', { n: 2 }, { jobId: 'given' });
    await plain.add('job', { n: 2 }, { jobId: 'given' });
    const ours = (await keysMatching(redis, `${namespace}*:${name}:*`)).map((k) => k.replace(`:${name}:`, ':NAME:'));
    const theirs = (await keysMatching(redis, `${namespace}*:${plainName}:*`)).map((k) => k.replace(`:${plainName}:`, ':NAME:'));
    expect(ours.length).toBeGreaterThan(3);
    expect(ours).toEqual(theirs);
    expect(ours.every((k) => k.startsWith(`${queuePrefix(namespace)}:NAME:`))).toBe(true);
  });

  it('spreads jobs over all 3 partitions, each job on the partition its id hashes to, and sums counts', async () => {
    const { queue } = openQueue<{ n: number }>(3);
    const ids = Array.from({ length: 300 }, (_, n) => `spread-${n}`);
    await Promise.all(ids.map((id, n) => queue.add('job', { n }, { jobId: id })));
    const perPartition = await Promise.all(queue.partitions.map((q) => q.getJobCounts('waiting')));
    for (const c of perPartition) expect(c.waiting).toBeGreaterThan(60);
    expect(perPartition.reduce((a, c) => a + (c.waiting ?? 0), 0)).toBe(300);
    expect(await queue.getJobCounts('waiting', 'active')).toEqual({ waiting: 300, active: 0 });
    expect(await queue.count()).toBe(300);
    expect((await queue.getJobs(['waiting'])).length).toBe(300);
    for (const id of ids.slice(0, 30)) {
      expect(await queue.partitions[queue.partitionOf(id)]!.getJob(id)).toBeDefined();
      expect((await queue.getJob(id))?.data.n).toBe(ids.indexOf(id));
    }
    // The keys really are in three slots (one master each on a 3-master cluster).
    const slots = new Set((await keysMatching(redis, `{*}:q:${queue.name}:wait`)).filter((k) => k.includes(namespace.slice(1, -1))).map((k) => calculateSlot(k)));
    expect(slots.size).toBe(3);
  });

  it('gives a job without an id a random one, so two partitions never hand out the same id', async () => {
    const { queue } = openQueue<{ n: number }>(3);
    const jobs = await Promise.all(Array.from({ length: 30 }, (_, n) => queue.add('job', { n })));
    const ids = jobs.map((j) => j.id!);
    expect(new Set(ids).size).toBe(30);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}$/);
    for (const j of jobs) expect((await queue.getJob(j.id!))?.data.n).toBe(j.data.n);
  });

  it('runs a job added twice with the same id once, on every partition', async () => {
    const { name, queue } = openQueue<{ n: number }>(3);
    const runs = new Map<string, number>();
    startWorker<{ n: number }, number>(name, async (job) => {
      runs.set(job.id!, (runs.get(job.id!) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, 20));
      return job.data.n;
    });
    const ids = idsCovering(3, 10, 'twice');
    // At once (both adds race), then again once the first run may be over.
    await Promise.all(ids.flatMap((id, n) => [queue.add('job', { n }, { jobId: id }), queue.add('job', { n }, { jobId: id })]));
    expect(await waitFor(async () => (await completed(queue)) === ids.length, 15_000)).toBe(true);
    await Promise.all(ids.map((id, n) => queue.add('job', { n }, { jobId: id })));
    await new Promise((r) => setTimeout(r, 500));
    expect(await completed(queue)).toBe(ids.length);
    expect(await queue.count()).toBe(0);
    expect([...runs.keys()].sort()).toEqual([...ids].sort());
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
  });
});

describe('partitioned workers', () => {
  it('with two instances run every job exactly once, each instance serving every partition', async () => {
    const { name, queue } = openQueue<{ n: number }>(3);
    const runs: Array<{ id: string; by: string; partition: number }> = [];
    for (const by of ['a', 'b']) {
      startWorker<{ n: number }, string>(
        name,
        async (job) => {
          runs.push({ id: job.id!, by, partition: queue.partitionOf(job.id!) });
          await new Promise((r) => setTimeout(r, 15));
          return by;
        },
        { concurrency: 4 },
      );
    }
    const ids = Array.from({ length: 240 }, (_, n) => `once-${n}`);
    await Promise.all(ids.map((id, n) => queue.add('job', { n }, { jobId: id })));
    expect(await waitFor(async () => (await completed(queue)) === ids.length, 20_000)).toBe(true);
    expect(runs.map((r) => r.id).sort()).toEqual([...ids].sort());
    for (const by of ['a', 'b']) {
      expect([by, [...new Set(runs.filter((r) => r.by === by).map((r) => r.partition))].sort()]).toEqual([by, [0, 1, 2]]);
    }
    // Each job's result is the instance that ran it: one answer per job.
    for (const r of runs.slice(0, 20)) expect((await queue.getJob(r.id))?.returnvalue).toBe(r.by);
  });

  it('split the concurrency, and hold a process with fewer slots than partitions to its total', async () => {
    const { name, queue } = openQueue<{ n: number }>(3);
    let running = 0;
    let most = 0;
    const worker = startWorker<{ n: number }, number>(
      name,
      async (job) => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 60));
        running--;
        return job.data.n;
      },
      { concurrency: 2 },
    );
    expect(worker.concurrency).toEqual([1, 1, 1]);
    expect(worker.workers.map((w) => w.concurrency)).toEqual([1, 1, 1]);
    expect(worker.workers.map((w) => [w.opts.lockDuration, w.opts.stalledInterval])).toEqual(Array(3).fill([WORKER_RECOVERY.lockDuration, WORKER_RECOVERY.stalledInterval]));
    await Promise.all(idsCovering(3, 5, 'gate').map((id, n) => queue.add('job', { n }, { jobId: id })));
    expect(await waitFor(async () => (await completed(queue)) === 15, 15_000)).toBe(true);
    expect(most).toBe(2);
  });

  it('close() lets the running jobs of every partition finish, then stops', async () => {
    const { name, queue } = openQueue<{ n: number }>(3);
    let started = 0;
    const worker = new PartitionedWorker<{ n: number }, number>(
      name,
      async (job) => {
        started++;
        await new Promise((r) => setTimeout(r, 300));
        return job.data.n;
      },
      { namespace, partitions: 3, concurrency: 3, connection: blocking() },
    );
    closers.push(() => worker.close(true));
    await Promise.all(idsCovering(3, 2, 'close').map((id, n) => queue.add('job', { n }, { jobId: id })));
    expect(await waitFor(() => started === 3, 5_000)).toBe(true);
    await worker.close();
    expect(await queue.getJobCounts('completed', 'active', 'waiting')).toEqual({ completed: 3, active: 0, waiting: 3 });
  });

  /** Adds one job per partition for `holder` to take, waits until it holds them all, then starts the survivor. */
  async function heldThenRecovered(tag: string, holder: (name: string) => Promise<{ held: () => Promise<string[]>; die: () => Promise<void> }>) {
    const { name, queue } = openQueue<{ n: number }>(3);
    const held = await holder(name);
    const doomed = idsCovering(3, 1, `${tag}-held`);
    await Promise.all(doomed.map((id, n) => queue.add('job', { n }, { jobId: id })));
    expect(await waitFor(async () => (await held.held()).length === 3, 10_000)).toBe(true);
    expect((await held.held()).sort()).toEqual([...doomed].sort());
    // The survivor, reading every partition, also serves what arrives meanwhile.
    const runs: string[] = [];
    startWorker<{ n: number }, string>(name, async (job) => {
      runs.push(job.id!);
      return 'survivor';
    });
    const fresh = idsCovering(3, 2, `${tag}-fresh`);
    await Promise.all(fresh.map((id, n) => queue.add('job', { n }, { jobId: id })));
    expect(await waitFor(async () => (await completed(queue)) === fresh.length, 5_000)).toBe(true);
    const diedAt = Date.now();
    await held.die();
    expect(await waitFor(async () => (await completed(queue)) === fresh.length + doomed.length, 30_000, 100)).toBe(true);
    const tookMs = Date.now() - diedAt;
    // Within the lock (15 s) and one stalled check (5 s), well inside the 60 s default request deadline.
    expect(tookMs).toBeLessThan(WORKER_RECOVERY.lockDuration + 2 * WORKER_RECOVERY.stalledInterval);
    expect(runs.sort()).toEqual([...doomed, ...fresh].sort());
    for (const id of doomed) {
      const job = (await queue.getJob(id))!;
      expect([id, job.returnvalue, job.stalledCounter]).toEqual([id, 'survivor', 1]);
    }
  }

  it('put the jobs of a SIGKILLed worker process back on their partitions, and another process runs them in time', async () => {
    const held = `${namespace}:held:kill`;
    await heldThenRecovered('kill', async (name) => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'hold-jobs-worker.ts')], {
        cwd: ROOT,
        env: { ...process.env, HOLD_NAMESPACE: namespace, HOLD_QUEUE: name, HOLD_LIST: held, HOLD_PARTITIONS: '3', HOLD_CONCURRENCY: '3' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      expect(await waitFor(() => out.includes('ready'), 20_000, 50)).toBe(true);
      return {
        held: () => redis.lrange(held, 0, -1),
        die: async () => {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        },
      };
    });
  }, 60_000);

  it('put the jobs a worker closed without finishing back on their partitions, and the other runs them', async () => {
    const held: string[] = [];
    await heldThenRecovered('close', async (name) => {
      const worker = new PartitionedWorker<{ n: number }, never>(
        name,
        async (job) => {
          held.push(job.id!);
          return new Promise<never>(() => undefined);
        },
        { namespace, partitions: 3, concurrency: 3, connection: blocking() },
      );
      await worker.waitUntilReady();
      return { held: async () => held, die: () => worker.close(true) };
    });
  }, 60_000);
});
