/**
 * A worker process for jobs-partitions.test.ts to SIGKILL: reads every partition of the queue
 * HOLD_QUEUE under HOLD_NAMESPACE (HOLD_PARTITIONS partitions, HOLD_CONCURRENCY jobs at once),
 * pushes each job's id to the list HOLD_LIST and never finishes it. Prints `ready` once every
 * partition's Worker is connected.
 */
import { createRedis } from '../src/redis';
import { PartitionedWorker } from '../src/queues/partitioned-worker';

const namespace = process.env.HOLD_NAMESPACE!;
const list = process.env.HOLD_LIST!;
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { blocking: true, name: 'test-hold-jobs-worker' });
const worker = new PartitionedWorker<unknown, never>(
  process.env.HOLD_QUEUE!,
  async (job) => {
    await redis.rpush(list, job.id!);
    return new Promise<never>(() => undefined);
  },
  { namespace, partitions: Number(process.env.HOLD_PARTITIONS), concurrency: Number(process.env.HOLD_CONCURRENCY), connection: redis, name: 'doomed' },
);
worker.on('error', (err) => process.stderr.write(`${err.message}\n`));
void worker.waitUntilReady().then(() => process.stdout.write('ready\n'));
