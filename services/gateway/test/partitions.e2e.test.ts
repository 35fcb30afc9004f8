import OpenAI from 'openai';
import { EventBus, type JobCountSource, type PartitionedQueue } from '@tollgate/shared';
import { png1x1 } from '@tollgate/vision/test/images';
import { waitFor } from '@tollgate/shared/src/testing';
import { startFullSystem } from './full-harness';
import { post, startSystem } from './harness';
import { startReplicas } from './replicas-harness';
import { postJson, startVisionSystem } from './vision-harness';

/** The chat and vision paths with QUEUE_PARTITIONS=3, through the gateway, end to end. */

const PARTITIONS = 3;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/** Completed jobs on each partition of a queue. */
const completedPerPartition = <D, R>(q: PartitionedQueue<D, R>) => Promise.all(q.partitions.map(async (p) => (await p.getJobCounts('completed')).completed ?? 0));
const completed = async (q: JobCountSource) => (await q.getJobCounts('completed')).completed ?? 0;

test('chat, plain and streamed, is answered over every partition, and /metrics sums the queue', async () => {
  const sys = await startSystem('gw-parts-chat', { queuePartitions: PARTITIONS });
  closers.push(() => sys.close());
  expect(sys.queue.partitions).toHaveLength(PARTITIONS);
  expect(sys.worker.workers).toHaveLength(PARTITIONS);
  const auth = { authorization: `Bearer ${sys.apiKey}` };

  const plain = await Promise.all(Array.from({ length: 30 }, (_, i) => post(sys, '/v1/chat', { message: `partitioned ${i}` }, { ...auth, 'x-request-id': `parts-${i}` })));
  for (const [i, res] of plain.entries()) {
    expect([i, res.status, res.json.request_id]).toEqual([i, 200, `parts-${i}`]);
    expect(res.json.reply).toMatch(/^Stub reply \(gemini\/gemini-2\.0-flash\)/);
  }
  const sdk = new OpenAI({ apiKey: sys.apiKey, baseURL: `${sys.url}/v1`, maxRetries: 0 });
  const streamed = await Promise.all(
    Array.from({ length: 12 }, async (_, i) => {
      let text = '';
      for await (const chunk of await sdk.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `stream ${i}` }], stream: true })) {
        text += chunk.choices[0]?.delta?.content ?? '';
      }
      return text;
    }),
  );
  for (const text of streamed) expect(text).toMatch(/^Stub reply \(openai\/gpt-4o-mini\)/);

  // A streamed reply ends with its last item; the job is marked completed a moment later.
  let per: number[] = [];
  await waitFor(async () => (per = await completedPerPartition(sys.queue)).reduce((a, b) => a + b, 0) >= 42, 10_000, 50);
  // 42 jobs, each partition's share by the hash of a random id: none is left out.
  for (const n of per) expect(n).toBeGreaterThan(0);
  expect(per.reduce((a, b) => a + b, 0)).toBe(42);
  const metrics = await (await fetch(`${sys.url}/metrics`)).text();
  expect(metrics).toContain('tollgate_queue_jobs{queue="chat",state="completed"} 42');
  // One answer per request: one workflow.completed each.
  let done = await sys.bus.history({ types: 'workflow.completed' });
  await waitFor(async () => (done = await sys.bus.history({ types: 'workflow.completed' })).length >= 42, 10_000, 50);
  expect(done).toHaveLength(42);
  expect(new Set(done.map((e) => e.event.correlation_id)).size).toBe(42);
});

test('vision is answered over every partition', async () => {
  const sys = await startVisionSystem('gw-parts-vision', { queuePartitions: PARTITIONS });
  closers.push(() => sys.close());
  expect(sys.worker.workers).toHaveLength(PARTITIONS);
  const replies = await Promise.all(
    Array.from({ length: 24 }, (_, i) => postJson(sys, { image_base64: png1x1([i, 40, 200]).toString('base64'), prompt: `What is in picture ${i}?` }, { 'x-request-id': `parts-vision-${i}` })),
  );
  for (const [i, res] of replies.entries()) expect([i, res.status, typeof res.json.analysis]).toEqual([i, 200, 'string']);
  const per = await completedPerPartition(sys.queue);
  for (const n of per) expect(n).toBeGreaterThan(0);
  expect(per.reduce((a, b) => a + b, 0)).toBe(24);
  expect(await sys.jobCount()).toBe(24);
});

test('two gateways and two instances of each worker answer every request exactly once', async () => {
  const sys = await startReplicas('gw-parts-replicas', { gateways: 2, chatWorkers: 2, visionWorkers: 2, queuePartitions: PARTITIONS });
  closers.push(() => sys.close());
  const { key } = await sys.keys.create({ name: 'parts', user_id: 'parts-user', project_id: 'parts-proj', scopes: ['chat', 'vision'] });
  const auth = { authorization: `Bearer ${key}` };
  const chats = Array.from({ length: 60 }, (_, i) => post(sys.gateways[i % 2]!, '/v1/chat', { message: `replica ${i}` }, { ...auth, 'x-request-id': `parts-r-${i}` }));
  const visions = Array.from({ length: 12 }, (_, i) =>
    postJson({ url: sys.gateways[i % 2]!.url, apiKey: key }, { image_base64: png1x1([i, 99, 1]).toString('base64'), prompt: `Replica picture ${i}?` }, { 'x-request-id': `parts-rv-${i}` }),
  );
  const [chatReplies, visionReplies] = await Promise.all([Promise.all(chats), Promise.all(visions)]);
  for (const res of [...chatReplies, ...visionReplies]) expect(res.status).toBe(200);
  expect(chatReplies.map((r) => r.json.request_id).sort()).toEqual(Array.from({ length: 60 }, (_, i) => `parts-r-${i}`).sort());

  const bus = new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'test-reader' });
  const done = (await bus.history({ types: 'workflow.completed' })).map((e) => e.event.correlation_id);
  expect(done.sort()).toEqual([...Array.from({ length: 60 }, (_, i) => `parts-r-${i}`), ...Array.from({ length: 12 }, (_, i) => `parts-rv-${i}`)].sort());
  const usage = (await bus.history({ types: 'usage.recorded' })).map((e) => e.event.correlation_id);
  expect(new Set(usage).size).toBe(usage.length);
  expect(usage).toHaveLength(72);
});

test('the operator status and /metrics report each request queue once, summed over its partitions', async () => {
  const sys = await startFullSystem('gw-parts-ops', { queuePartitions: PARTITIONS });
  closers.push(() => sys.close());
  const { key } = await sys.keys.create({ name: 'parts-ops', user_id: 'parts-ops', project_id: 'parts-ops', scopes: ['chat'] });
  const replies = await Promise.all(Array.from({ length: 15 }, (_, i) => post(sys, '/v1/chat', { message: `ops ${i}` }, { authorization: `Bearer ${key}` })));
  for (const r of replies) expect(r.status).toBe(200);
  expect(await completed(sys.queues.chat)).toBe(15);

  const status = await fetch(`${sys.url}/v1/ops/status`, { headers: { authorization: `Bearer ${sys.adminToken}` } });
  expect(status.status).toBe(200);
  const body = (await status.json()) as { queues: Record<string, Record<string, number>> };
  expect(Object.keys(body.queues).sort()).toEqual(['chat', 'vision']);
  expect(body.queues.chat).toMatchObject({ completed: 15, waiting: 0, active: 0 });
  const metrics = await (await fetch(`${sys.url}/metrics`)).text();
  expect(metrics.match(/^tollgate_queue_jobs\{queue="chat",state="completed"\} .*$/gm)).toEqual(['tollgate_queue_jobs{queue="chat",state="completed"} 15']);
});
