import { EventBus, type EventBusOptions } from '../src/bus/event-bus';
import { testRedis, waitFor } from '../src/testing';

const { redis, prefix, cleanup } = testRedis('busbatch');
const buses: EventBus[] = [];
let n = 0;

function makeBus(sub: string, service: string, extra: Partial<EventBusOptions> = {}): EventBus {
  const bus = new EventBus({ redis, prefix: `${prefix}:${sub}`, service, blockMs: 50, retryDelayMs: 5, ...extra });
  buses.push(bus);
  return bus;
}

const usage = (i: number) => ({
  provider: 'openai',
  model: 'gpt-4o-mini',
  service: 'chat-workflow',
  operation: 'chat',
  units: { input_tokens: i, output_tokens: 1 },
  usage_source: 'provider' as const,
  request_id: `req-${i}`,
  cached: false,
});

async function publishUsage(bus: EventBus, count: number, from = 0): Promise<string[]> {
  const events = await bus.publishMany(
    Array.from({ length: count }, (_, i) => ({ type: 'usage.recorded' as const, data: usage(from + i), meta: { correlation_id: `c${from + i}` } })),
  );
  return events.map((e) => e.id);
}

afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});
afterAll(cleanup);

test('a batch subscription gets the wanted events of a read in one call, each once, over several patterns; all are acked', async () => {
  const s = `once${n++}`;
  const publisher = makeBus(s, 'gateway');
  // Published before the consumer starts, so its reads come back full.
  const usageIds = await publishUsage(publisher, 300);
  const opened = await publisher.publish('circuit.opened', { breaker: 'openai:chat', provider: 'openai', operation: 'chat', failures: 5, reason: 'test' }, { correlation_id: 'x' });
  await publisher.publish('workflow.started', { workflow: 'chat' }, { correlation_id: 'y' }); // not wanted
  const consumer = makeBus(s, 'analytics', { batchSize: 100, concurrency: 1_000 });
  const calls: number[] = [];
  const seen: string[] = [];
  consumer.subscribeBatch(['usage.*', 'circuit.opened'], (items) => {
    calls.push(items.length);
    for (const it of items) seen.push(it.event.id);
  });
  await consumer.start();
  const expected = [...usageIds, opened.id];
  expect(await waitFor(async () => seen.length >= expected.length && (await consumer.pendingCount()) === 0)).toBe(true);
  await new Promise((r) => setTimeout(r, 100)); // room for a duplicate to show up
  expect(seen.sort()).toEqual(expected.sort());
  // 300 entries in reads of at most 100: a handful of calls, not one per event.
  expect(calls.length).toBeLessThanOrEqual(6);
  expect(Math.max(...calls)).toBeGreaterThan(1);
  expect(await consumer.deadLetters()).toEqual([]);
});

test('a failing batch is retried, then run event by event: only the event that fails alone is dead-lettered', async () => {
  const s = `poison${n++}`;
  const publisher = makeBus(s, 'gateway');
  const ids = await publishUsage(publisher, 50);
  const poison = ids[17]!;
  const consumer = makeBus(s, 'ledger', { batchSize: 100, concurrency: 1_000, handlerAttempts: 2 });
  const handled = new Set<string>();
  const sizes: number[] = [];
  consumer.subscribeBatch(
    'usage.recorded',
    (items) => {
      sizes.push(items.length);
      if (items.some((it) => it.event.id === poison)) throw new Error('cannot price this one');
      for (const it of items) handled.add(it.event.id);
    },
    { name: 'pricing' },
  );
  await consumer.start();
  expect(await waitFor(async () => (await consumer.deadLetters()).length === 1 && (await consumer.pendingCount()) === 0)).toBe(true);
  const dead = await consumer.deadLetters();
  expect(dead[0]).toMatchObject({ handler: 'pricing', attempts: 2 });
  expect(JSON.parse(dead[0]!.raw).id).toBe(poison);
  expect([...handled].sort()).toEqual(ids.filter((id) => id !== poison).sort());
  // The whole batch twice, then singletons (the poison one twice more).
  expect(sizes.filter((k) => k > 1).length).toBeGreaterThanOrEqual(2);
  expect(sizes.filter((k) => k === 1).length).toBeGreaterThanOrEqual(ids.length + 1);
});

test('a permanent error skips the batch retries; per-event and batch subscriptions of one type both get each event', async () => {
  const s = `perm${n++}`;
  const publisher = makeBus(s, 'gateway');
  const ids = await publishUsage(publisher, 20);
  const consumer = makeBus(s, 'ledger', { batchSize: 100, concurrency: 1_000, handlerAttempts: 5 });
  const perEvent: string[] = [];
  let batchCalls = 0;
  consumer.subscribe('usage.recorded', (e) => void perEvent.push(e.id));
  consumer.subscribeBatch('usage.recorded', (items) => {
    batchCalls++;
    if (items.some((it) => it.event.type === 'usage.recorded' && it.event.data.units.input_tokens === 3)) throw Object.assign(new Error('unknown model'), { retryable: false });
  }, { name: 'strict' });
  await consumer.start();
  expect(await waitFor(async () => (await consumer.deadLetters()).length === 1 && (await consumer.pendingCount()) === 0)).toBe(true);
  expect(perEvent.sort()).toEqual([...ids].sort());
  const dead = await consumer.deadLetters();
  expect(dead[0]).toMatchObject({ handler: 'strict', attempts: 1 });
  expect(JSON.parse(dead[0]!.raw).id).toBe(ids[3]);
  // One failed batch call, then one call per event: no retry of a permanent failure.
  expect(batchCalls).toBe(1 + ids.length);
});

test('with a batch subscription, an entry that is not a valid event is still dead-lettered at consume', async () => {
  const s = `bad${n++}`;
  const consumer = makeBus(s, 'ledger');
  const seen: string[] = [];
  consumer.subscribeBatch('usage.recorded', (items) => void seen.push(...items.map((it) => it.event.id)));
  const [good] = await publishUsage(makeBus(s, 'gateway'), 1);
  await redis.xadd(consumer.stream, '*', 'type', 'usage.recorded', 'event', '{"not":"an event"}');
  await consumer.start();
  expect(await waitFor(async () => (await consumer.deadLetters()).length === 1 && (await consumer.pendingCount()) === 0)).toBe(true);
  expect(seen).toEqual([good]);
  expect((await consumer.deadLetters())[0]).toMatchObject({ handler: '(decode)', raw: '{"not":"an event"}' });
});
