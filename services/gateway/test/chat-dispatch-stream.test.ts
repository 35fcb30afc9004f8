import { QueueEvents, Worker } from 'bullmq';
import {
  type ChatJob,
  type ChatJobResult,
  type ChatStreamItem,
  chatOutputKey,
  chatReplyKey,
  createRedis,
  PartitionedQueue,
  QUEUES,
  queuePrefix,
} from '@tollgate/shared';
import { TEST_REDIS_URL, testRedis } from '@tollgate/shared/src/testing';
import { ChatDispatcher } from '../src/chat-dispatch';

const { redis, prefix, cleanup } = testRedis('chat-dispatch-stream');
const closers: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await cleanup();
});

const REPLY = 'Stub reply in three parts.';
const answer = (): ChatJobResult => ({
  ok: true,
  reply: REPLY,
  provider: 'openai',
  model: 'gpt-4o-mini',
  units: { input_tokens: 5, output_tokens: 6 },
  usage_source: 'provider',
  attempts: [],
  fallback_used: false,
});
const input = { request_id: 'req-1', user_id: 'alice', project_id: 'web', messages: [{ role: 'user' as const, content: 'hi' }] };

/**
 * A worker that writes `delivered` of the answer to the gateway's reply stream and the rest to
 * the job's own key, as an older worker (one that does not know `reply_to`) writes all of it.
 */
async function setUp(ns: string, delivered: number) {
  const queue = new PartitionedQueue<ChatJob, ChatJobResult>(QUEUES.chat, { namespace: ns, partitions: 1, connection: redis });
  const blocking = [createRedis(TEST_REDIS_URL, { blocking: true }), createRedis(TEST_REDIS_URL, { blocking: true })];
  const events = new QueueEvents(QUEUES.chat, { connection: blocking[0]!, prefix: queuePrefix(ns) });
  const worker = new Worker<ChatJob, ChatJobResult>(
    QUEUES.chat,
    async (job) => {
      const item = (i: ChatStreamItem) => JSON.stringify(i);
      if (delivered > 0) await redis.xadd(chatReplyKey(ns, job.data.reply_to!), '*', 'job', job.id!, 'item', item({ kind: 'delta', text: REPLY.slice(0, delivered) }));
      await redis.xadd(chatOutputKey(ns, job.id!), '*', 'item', item({ kind: 'delta', text: REPLY.slice(delivered) }));
      return answer();
    },
    { connection: blocking[1]!, prefix: queuePrefix(ns) },
  );
  await Promise.all([events.waitUntilReady(), worker.waitUntilReady()]);
  closers.push(() => worker.close(), () => events.close(), () => queue.close(), () => Promise.all(blocking.map((c) => c.quit())));
  return new ChatDispatcher(queue, [events], redis, ns, 10_000);
}

async function collect(stream: AsyncGenerator<ChatStreamItem>): Promise<ChatStreamItem[]> {
  const out: ChatStreamItem[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

test('a job whose items never reach the reply stream still streams its whole answer, from its stored result', async () => {
  const dispatcher = await setUp(`${prefix}:none`, 0);
  const items = await collect(dispatcher.stream(input));
  expect(items).toEqual([{ kind: 'delta', text: REPLY }, { kind: 'done', result: answer() }]);
});

test('when part of the answer came through, only the rest is sent from the stored result: no text twice, none missing', async () => {
  const dispatcher = await setUp(`${prefix}:part`, 11);
  const items = await collect(dispatcher.stream(input));
  expect(items).toEqual([{ kind: 'delta', text: REPLY.slice(0, 11) }, { kind: 'delta', text: REPLY.slice(11) }, { kind: 'done', result: answer() }]);
  expect(items.map((i) => (i.kind === 'delta' ? i.text : '')).join('')).toBe(REPLY);
});
