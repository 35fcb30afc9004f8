import type Redis from 'ioredis';
import { EventBus, type EventBusOptions } from '../src/bus/event-bus';
import { z } from 'zod';
import { EVENT_CATALOG } from '../src/events/catalog';
import { type AnyEvent, schemaTag, schemaTagFor } from '../src/events/envelope';
import { createRedis } from '../src/redis';
import { TEST_REDIS_URL, testRedis, waitFor } from '../src/testing';

const { redis, prefix, cleanup } = testRedis('bus');
const buses: EventBus[] = [];
let n = 0;

/** Each test gets its own stream under the file's prefix. */
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

afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});
afterAll(cleanup);

test('every consumer group sees every event once; consumers in one group split them without overlap', async () => {
  const s = `split${n++}`;
  const seen = { ledger: [] as string[], alertA: [] as string[], alertB: [] as string[] };
  const ledger = makeBus(s, 'ledger');
  const alertA = makeBus(s, 'alerting', { consumer: 'a' });
  const alertB = makeBus(s, 'alerting', { consumer: 'b' });
  ledger.subscribe('usage.recorded', (e) => void seen.ledger.push(e.id));
  alertA.subscribe('usage.recorded', (e) => void seen.alertA.push(e.id));
  alertB.subscribe('usage.recorded', (e) => void seen.alertB.push(e.id));
  await Promise.all([ledger.start(), alertA.start(), alertB.start()]);

  const publisher = makeBus(s, 'gateway');
  const published: string[] = [];
  for (let batch = 0; batch < 10; batch++) {
    const events = await publisher.publishMany(
      Array.from({ length: 100 }, (_, i) => ({ type: 'usage.recorded' as const, data: usage(batch * 100 + i), meta: { correlation_id: `c${i}` } })),
    );
    published.push(...events.map((e) => e.id));
  }

  expect(await waitFor(() => seen.ledger.length >= 1000 && seen.alertA.length + seen.alertB.length >= 1000)).toBe(true);
  await new Promise((r) => setTimeout(r, 150)); // room for any duplicate to show up
  expect(seen.ledger).toHaveLength(1000);
  expect(new Set(seen.ledger)).toEqual(new Set(published));
  const alerting = [...seen.alertA, ...seen.alertB];
  expect(alerting).toHaveLength(1000);
  expect(new Set(alerting)).toEqual(new Set(published));
  // Both instances took part: the group balances across consumers.
  expect(seen.alertA.length).toBeGreaterThan(0);
  expect(seen.alertB.length).toBeGreaterThan(0);
  expect(await ledger.pendingCount()).toBe(0);
});

test('entries a crashed consumer left unacked are reclaimed and handled by another instance', async () => {
  const s = `reclaim${n++}`;
  const publisher = makeBus(s, 'gateway');
  const survivor = makeBus(s, 'ledger', { consumer: 'survivor', claimIdleMs: 200, claimIntervalMs: 50, startId: '$' });
  const handled: Array<{ id: string; deliveries: number }> = [];
  survivor.subscribe('usage.recorded', (e, ctx) => void handled.push({ id: e.id, deliveries: ctx.deliveries }));
  await survivor.start();
  await survivor.stop(); // the group exists; now the "crashed" instance takes the events
  const events = await Promise.all([0, 1, 2, 3, 4].map((i) => publisher.publish('usage.recorded', usage(i), { correlation_id: 'c' })));

  // What a SIGKILLed instance leaves behind: entries delivered to it and never acked.
  const taken = (await redis.xreadgroup('GROUP', 'ledger', 'crashed', 'COUNT', 100, 'STREAMS', survivor.stream, '>')) as Array<[string, unknown[]]>;
  expect(taken[0]![1]).toHaveLength(5);
  expect(await survivor.pendingCount()).toBe(5);

  const second = makeBus(s, 'ledger', { consumer: 'survivor', claimIdleMs: 200, claimIntervalMs: 50 });
  second.subscribe('usage.recorded', (e, ctx) => void handled.push({ id: e.id, deliveries: ctx.deliveries }));
  await second.start();
  expect(await waitFor(() => handled.length >= 5)).toBe(true);
  expect(handled.map((h) => h.id).sort()).toEqual(events.map((e) => e.id).sort());
  expect(handled.every((h) => h.deliveries === 2)).toBe(true);
  expect(await waitFor(async () => (await second.pendingCount()) === 0)).toBe(true);
});

test('an entry redelivered more than maxDeliveries times is dead-lettered as poison', async () => {
  const s = `poison${n++}`;
  const bus = makeBus(s, 'ledger', { claimIdleMs: 1, claimIntervalMs: 20, maxDeliveries: 2, startId: '0' });
  const publisher = makeBus(s, 'gateway');
  const ev = await publisher.publish('usage.recorded', usage(1), { correlation_id: 'c' });
  await redis.xgroup('CREATE', bus.stream, 'ledger', '0', 'MKSTREAM');
  // Two deliveries that never acked (two crashes in a row).
  await redis.xreadgroup('GROUP', 'ledger', 'dead1', 'STREAMS', bus.stream, '>');
  await redis.xclaim(bus.stream, 'ledger', 'dead2', 0, (await redis.xrange(bus.stream, '-', '+'))[0]![0]);
  const handled: string[] = [];
  bus.subscribe('*', (e) => void handled.push(e.id));
  await bus.start();
  expect(await waitFor(async () => (await bus.deadLetters()).length === 1)).toBe(true);
  const [dead] = await bus.deadLetters();
  expect(dead!.handler).toBe('(delivery)');
  expect(dead!.reason).toMatch(/delivered 3 times/);
  expect(JSON.parse(dead!.raw).id).toBe(ev.id);
  expect(handled).toEqual([]);
  expect(await bus.pendingCount()).toBe(0);
});

test('a handler that always throws is dead-lettered after its retries while the other handlers all succeed', async () => {
  const s = `dlq${n++}`;
  const bus = makeBus(s, 'alerting', { handlerAttempts: 3 });
  const attempts = new Map<string, number>();
  const good1: string[] = [];
  const good2: string[] = [];
  bus.subscribe('usage.recorded', (e) => {
    attempts.set(e.id, (attempts.get(e.id) ?? 0) + 1);
    throw new Error(`boom for ${e.data.request_id}`);
  }, { name: 'always-fails' });
  bus.subscribe('usage.recorded', async (e) => void good1.push(e.id), { name: 'good-1' });
  bus.subscribe('*', (e) => void good2.push(e.id), { name: 'good-2' });
  await bus.start();
  const publisher = makeBus(s, 'gateway');
  const events = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => publisher.publish('usage.recorded', usage(i), { correlation_id: `c${i}` })));

  expect(await waitFor(async () => (await bus.deadLetters()).length === 10)).toBe(true);
  expect(good1.sort()).toEqual(events.map((e) => e.id).sort());
  expect(good2.sort()).toEqual(events.map((e) => e.id).sort());
  expect([...attempts.values()]).toEqual(Array(10).fill(3));
  const dead = await bus.deadLetters();
  expect(new Set(dead.map((d) => d.handler))).toEqual(new Set(['always-fails']));
  expect(dead.every((d) => d.attempts === 3 && d.group === 'alerting' && /boom for req-\d/.test(d.reason))).toBe(true);
  expect(new Set(dead.map((d) => JSON.parse(d.raw).id))).toEqual(new Set(events.map((e) => e.id)));
  expect(await waitFor(async () => (await bus.pendingCount()) === 0)).toBe(true);
});

test('a handler error marked retryable: false is dead-lettered on the first attempt', async () => {
  const s = `perm${n++}`;
  const bus = makeBus(s, 'ledger', { handlerAttempts: 5 });
  let calls = 0;
  bus.subscribe('usage.recorded', () => {
    calls++;
    throw Object.assign(new Error('unknown model'), { retryable: false });
  });
  await bus.start();
  await makeBus(s, 'gateway').publish('usage.recorded', usage(1), { correlation_id: 'c' });
  expect(await waitFor(async () => (await bus.deadLetters()).length === 1)).toBe(true);
  expect(calls).toBe(1);
  expect((await bus.deadLetters())[0]!.attempts).toBe(1);
});

test('an entry that is not a valid event is dead-lettered at consume, never dropped silently', async () => {
  const s = `bad${n++}`;
  const bus = makeBus(s, 'ledger');
  const handled: AnyEvent[] = [];
  bus.subscribe('*', (e) => void handled.push(e));
  await bus.start();
  await redis.xadd(bus.stream, '*', 'type', 'usage.recorded', 'event', '{"not":"an event"}');
  await redis.xadd(bus.stream, '*', 'type', 'x', 'event', 'not json');
  expect(await waitFor(async () => (await bus.deadLetters()).length === 2)).toBe(true);
  const dead = await bus.deadLetters();
  expect(dead.every((d) => d.handler === '(decode)')).toBe(true);
  expect(dead.map((d) => d.reason).join(' ')).toMatch(/Invalid event envelope/);
  expect(handled).toEqual([]);
});

test('an entry carries the schema that checked it at publish; one checked by another schema, or by none, is validated in full at consume', async () => {
  const s = `tag${n++}`;
  const bus = makeBus(s, 'ledger');
  const handled: AnyEvent[] = [];
  bus.subscribe('usage.recorded', (e) => void handled.push(e));
  const published = await bus.publish('usage.recorded', usage(1), { correlation_id: 'c-tag' });
  const [first] = await redis.xrange(bus.stream, '-', '+');
  expect(first?.[1].slice(0, 4)).toEqual(['type', 'usage.recorded', 'schema', schemaTag('usage.recorded')]);

  // The tag follows the type's version and schema: a build that changed either writes another.
  const schema = EVENT_CATALOG['usage.recorded'].data;
  expect(schemaTagFor('usage.recorded', 1, schema)).toBe(schemaTag('usage.recorded'));
  expect(schemaTagFor('usage.recorded', 2, schema)).not.toBe(schemaTag('usage.recorded'));
  expect(schemaTagFor('usage.recorded', 1, schema.extend({ region: z.string().optional() }))).not.toBe(schemaTag('usage.recorded'));
  expect(schemaTag('cost.recorded')).not.toBe(schemaTag('usage.recorded'));

  // Written by another schema's producer: valid data is delivered, data this build refuses is dead-lettered.
  const other = schemaTagFor('usage.recorded', 1, schema.extend({ region: z.string().optional() }));
  const envelope = (id: string, data: unknown) => JSON.stringify({ ...published, id, data });
  await redis.xadd(bus.stream, '*', 'type', 'usage.recorded', 'schema', other, 'event', envelope('e-other-ok', { ...usage(2), region: 'eu' }));
  await redis.xadd(bus.stream, '*', 'type', 'usage.recorded', 'schema', other, 'event', envelope('e-other-bad', { ...usage(3), units: { input_tokens: -5 } }));
  await redis.xadd(bus.stream, '*', 'type', 'usage.recorded', 'schema', 'forged-or-stale', 'event', envelope('e-untagged-bad', { ...usage(4), cached: 'no' }));
  await bus.start();
  expect(await waitFor(async () => handled.length === 2 && (await bus.deadLetters()).length === 2)).toBe(true);
  expect(handled.map((e) => e.id)).toEqual([published.id, 'e-other-ok']);
  expect(handled[0]).toEqual(published);
  const dead = await bus.deadLetters();
  expect(dead.map((d) => JSON.parse(d.raw).id).sort()).toEqual(['e-other-bad', 'e-untagged-bad']);
  expect(dead.every((d) => d.handler === '(decode)' && /Invalid data/.test(d.reason))).toBe(true);
});

test('a type no subscription wants is acked without decoding; a bad entry of a wanted or unknown type is still dead-lettered', async () => {
  const s = `skip${n++}`;
  const ledger = makeBus(s, 'ledger');
  const handled: string[] = [];
  ledger.subscribe('usage.recorded', (e) => void handled.push(e.id));
  await ledger.start();
  const good = await makeBus(s, 'chat-workflow').publish('usage.recorded', usage(1), { correlation_id: 'c1' });
  // Bodies the ledger never has to read: valid or not, they are another consumer's business.
  await redis.xadd(ledger.stream, '*', 'type', 'workflow.started', 'event', '{"broken"');
  await redis.xadd(ledger.stream, '*', 'type', 'chat.response_generated', 'event', '{"not":"an event"}');
  // Bodies it must judge: a wanted type, a type outside the catalog, and a type field that lies.
  await redis.xadd(ledger.stream, '*', 'type', 'usage.recorded', 'event', '{"not":"an event"}');
  await redis.xadd(ledger.stream, '*', 'type', 'no.such.type', 'event', '{}');
  await redis.xadd(ledger.stream, '*', 'type', 'workflow.completed', 'event', JSON.stringify({ ...good, id: 'lying-1' }));
  await redis.xadd(ledger.stream, '*', 'type', 'usage.recorded', 'event', JSON.stringify({ ...good, id: 'lying-2', type: 'cost.recorded' }));

  expect(await waitFor(async () => (await ledger.pendingCount()) === 0 && (await ledger.deadLetters()).length >= 3)).toBe(true);
  const dead = await ledger.deadLetters();
  expect(dead).toHaveLength(3);
  expect(dead.every((d) => d.handler === '(decode)')).toBe(true);
  expect(dead.map((d) => d.raw).sort()).toEqual(['{"not":"an event"}', '{}', JSON.stringify({ ...good, id: 'lying-2', type: 'cost.recorded' })].sort());
  // The lying workflow.completed entry names a type nobody here reads, so it is skipped, not judged.
  expect(handled).toEqual([good.id]);
});

test('a journeys-only subscription gets the events of a journey and acks the rest of the bus undecoded', async () => {
  const s = `journeys${n++}`;
  const follower = makeBus(s, 'journeys');
  const handled: string[] = [];
  follower.subscribe('*', (e) => void handled.push(`${e.type}:${e.journey_id}`), { journeysOnly: true });
  await follower.start();
  const producer = makeBus(s, 'chat-workflow');
  await producer.publish('usage.recorded', usage(1), { correlation_id: 'c1' });
  const mine = await producer.publish('usage.recorded', usage(2), { correlation_id: 'c2', journey_id: 'j-1' });
  await producer.publishMany([{ type: 'usage.recorded', data: usage(3), meta: { correlation_id: 'c3', journey_id: 'j-2' } }]);
  // An entry without the journey field is never decoded, so even a broken body is not judged.
  await redis.xadd(follower.stream, '*', 'type', 'usage.recorded', 'event', '{"broken"');
  expect(await waitFor(async () => handled.length >= 2 && (await follower.pendingCount()) === 0)).toBe(true);
  expect(handled.sort()).toEqual(['usage.recorded:j-1', 'usage.recorded:j-2']);
  expect(await follower.deadLetters()).toEqual([]);
  const entry = (await redis.xrange(follower.stream, '-', '+')).find(([, f]) => f.some((v) => v.includes(mine.id)));
  expect(entry?.[1].slice(0, 6)).toEqual(['type', 'usage.recorded', 'schema', schemaTag('usage.recorded'), 'journey', 'j-1']);
});

test('a consumer that lingers between short reads still delivers every event, in batches', async () => {
  const s = `linger${n++}`;
  const bus = makeBus(s, 'ledger', { lingerMs: 200 });
  const seen: string[] = [];
  bus.subscribe('usage.recorded', (e) => void seen.push(e.id));
  await bus.start();
  // Count this consumer's reads (its blocking reader, the one partition's, is private: reach in, tests only).
  const reader = (bus as unknown as { consumers: Array<{ reader: Redis }> }).consumers[0]!.reader;
  let reads = 0;
  const xreadgroup = reader.xreadgroup.bind(reader) as (...args: unknown[]) => Promise<unknown>;
  (reader as unknown as { xreadgroup: (...args: unknown[]) => Promise<unknown> }).xreadgroup = (...args) => {
    reads++;
    return xreadgroup(...args);
  };
  const publisher = makeBus(s, 'chat-workflow');
  const first = await publisher.publish('usage.recorded', usage(0), { correlation_id: 'c0' });
  expect(await waitFor(() => seen.length === 1)).toBe(true);
  const readsAfterFirst = reads;
  // The read that brought the first event came back short, so the consumer now lingers: events
  // published one by one meanwhile must arrive together, in the next read.
  const rest: string[] = [];
  for (let i = 1; i < 40; i++) rest.push((await publisher.publish('usage.recorded', usage(i), { correlation_id: `c${i}` })).id);
  expect(await waitFor(() => seen.length >= 40)).toBe(true);
  expect(seen).toEqual([first.id, ...rest]);
  expect(reads - readsAfterFirst).toBeLessThanOrEqual(2);
});

test('wildcard and metadata filters deliver exactly the matching events', async () => {
  const s = `filter${n++}`;
  const bus = makeBus(s, 'ops');
  const got = { workflow: [] as string[], all: [] as string[], failed: [] as string[], userA: [] as string[], fn: [] as string[] };
  bus.subscribe('workflow.*', (e) => void got.workflow.push(e.type));
  bus.subscribe('*', (e) => void got.all.push(e.type));
  bus.subscribe('*.failed', (e) => void got.failed.push(e.type));
  bus.subscribe('usage.recorded', (e) => void got.userA.push(e.data.request_id), { filter: { user_id: 'A', project_id: ['p1', 'p2'] } });
  bus.subscribe('*', (e) => void got.fn.push(e.type), { filter: (e) => e.correlation_id === 'special' });
  await bus.start();

  const p = makeBus(s, 'chat-workflow');
  await p.publish('workflow.started', { workflow: 'chat' }, { correlation_id: 'c1' });
  await p.publish('chat.message_received', { conversation_id: 'cv', message_chars: 5, history_messages: 0 }, { correlation_id: 'special' });
  await p.publish('usage.recorded', usage(1), { correlation_id: 'c1', user_id: 'A', project_id: 'p1' });
  await p.publish('usage.recorded', usage(2), { correlation_id: 'c1', user_id: 'B', project_id: 'p1' });
  await p.publish('usage.recorded', usage(3), { correlation_id: 'c1', user_id: 'A', project_id: 'p3' });
  await p.publish('usage.recorded', usage(4), { correlation_id: 'c1', user_id: 'A', project_id: 'p2' });
  await p.publish('workflow.failed', {
    workflow: 'chat', duration_ms: 3,
    error: { category: 'timeout', strategy: 'retry_with_backoff', code: 'deadline_exceeded', message: 'Timed out', suggested_actions: [], retryable: true },
  }, { correlation_id: 'c1' });

  expect(await waitFor(() => got.all.length === 7)).toBe(true);
  await new Promise((r) => setTimeout(r, 100));
  expect(got.workflow.sort()).toEqual(['workflow.failed', 'workflow.started']);
  expect(got.failed).toEqual(['workflow.failed']);
  expect(got.userA.sort()).toEqual(['req-1', 'req-4']);
  expect(got.fn).toEqual(['chat.message_received']);
});

test('history returns events in order by count, type pattern and time range; replay marks them replayed', async () => {
  const s = `hist${n++}`;
  const p = makeBus(s, 'chat-workflow');
  const first = await p.publish('workflow.started', { workflow: 'chat' }, { correlation_id: 'h' });
  await new Promise((r) => setTimeout(r, 5));
  const mid = Date.now();
  await new Promise((r) => setTimeout(r, 5));
  const rest = [];
  for (let i = 0; i < 20; i++) rest.push(await p.publish('usage.recorded', usage(i), { correlation_id: 'h' }));
  const last = await p.publish('workflow.completed', { workflow: 'chat', duration_ms: 9 }, { correlation_id: 'h' });

  const all = await p.history();
  expect(all.map((e) => e.event.id)).toEqual([first.id, ...rest.map((e) => e.id), last.id]);
  const last3 = await p.history({ last: 3 });
  expect(last3.map((e) => e.event.id)).toEqual([rest[18]!.id, rest[19]!.id, last.id]);
  const wf = await p.history({ types: 'workflow.*' });
  expect(wf.map((e) => e.event.type)).toEqual(['workflow.started', 'workflow.completed']);
  const lastUsage = await p.history({ types: ['usage.recorded'], last: 2 });
  expect(lastUsage.map((e) => e.event.id)).toEqual([rest[18]!.id, rest[19]!.id]);
  const since = await p.history({ since: mid, types: 'workflow.*' });
  expect(since.map((e) => e.event.id)).toEqual([last.id]);
  const until = await p.history({ until: mid });
  expect(until.map((e) => e.event.id)).toEqual([first.id]);

  const replayed: Array<[string, boolean]> = [];
  const count = await p.replay({ types: 'usage.recorded' }, (e, ctx) => void replayed.push([e.id, ctx.replayed]));
  expect(count).toBe(20);
  expect(replayed).toEqual(rest.map((e) => [e.id, true]));
});

test('publishing an unknown type or invalid data is refused with invalid_event and writes nothing', async () => {
  const s = `invalid${n++}`;
  const p = makeBus(s, 'gateway');
  await expect(p.publish('nope.event' as 'usage.recorded', usage(1), { correlation_id: 'c' })).rejects.toMatchObject({ code: 'invalid_event' });
  await expect(p.publish('usage.recorded', { ...usage(1), units: { input_tokens: -1 } }, { correlation_id: 'c' })).rejects.toMatchObject({
    code: 'invalid_event',
    details: [expect.objectContaining({ path: 'units.input_tokens' })],
  });
  await expect(p.publish('usage.recorded', { ...usage(1), units: { input_tokens: 1.5 } }, { correlation_id: 'c' })).rejects.toMatchObject({ code: 'invalid_event' });
  await expect(p.publish('usage.recorded', { ...usage(1), extra: 1 } as never, { correlation_id: 'c' })).rejects.toMatchObject({ code: 'invalid_event' });
  await expect(p.publish('workflow.started', { workflow: 'chat' }, { correlation_id: '' })).rejects.toMatchObject({ code: 'invalid_event' });
  await expect(p.publishMany([
    { type: 'workflow.started', data: { workflow: 'chat' }, meta: { correlation_id: 'ok' } },
    { type: 'workflow.started', data: { workflow: 'nope' as 'chat' }, meta: { correlation_id: 'bad' } },
  ])).rejects.toMatchObject({ code: 'invalid_event' });
  expect(await redis.exists(p.stream)).toBe(0);
});

test('retention trims to about maxLen once every group has processed the entries', async () => {
  const s = `cap${n++}`;
  const p = makeBus(s, 'gateway', { maxLen: 100 });
  const consumer = makeBus(s, 'ledger');
  let seen = 0;
  consumer.subscribe('*', () => void seen++);
  await consumer.start();
  for (let i = 0; i < 5; i++) {
    await p.publishMany(Array.from({ length: 100 }, (_, j) => ({ type: 'usage.recorded' as const, data: usage(i * 100 + j), meta: { correlation_id: 'c' } })));
    await new Promise((r) => setTimeout(r, 5)); // spread ids over time, as real traffic is
  }
  expect(await waitFor(async () => seen === 500 && (await consumer.pendingCount()) === 0)).toBe(true);
  // A trim already running (publishing starts one every maxLen/10 events) is joined, and it may
  // have looked before the group caught up: the second one looks now.
  await p.trim();
  await p.trim();
  const len = await redis.xlen(p.stream);
  expect(len).toBeGreaterThanOrEqual(100);
  expect(len).toBeLessThan(500);
});

test('retention never drops entries a lagging group has not processed, until the hard cap', async () => {
  const s = `lag${n++}`;
  const p = makeBus(s, 'gateway', { maxLen: 100, hardMaxLen: 2_000 });
  // A group that exists but has read nothing yet: everything is still owed to it.
  await redis.xgroup('CREATE', p.stream, 'slow-service', '0', 'MKSTREAM');
  for (let i = 0; i < 5; i++) {
    await p.publishMany(Array.from({ length: 100 }, (_, j) => ({ type: 'usage.recorded' as const, data: usage(i * 100 + j), meta: { correlation_id: 'c' } })));
  }
  const held = await p.trim();
  expect(held).toMatchObject({ trimmed: 0, heldBy: 'slow-service' });
  expect(await redis.xlen(p.stream)).toBe(500);

  // It reads and acks the first 300: only those may go.
  const got = (await redis.xreadgroup('GROUP', 'slow-service', 'c1', 'COUNT', 300, 'STREAMS', p.stream, '>')) as unknown as Array<[string, Array<[string]>]>;
  await redis.xack(p.stream, 'slow-service', ...got[0]![1].map(([id]) => id));
  await p.trim();
  const left = (await redis.xrange(p.stream, '-', '+')) as unknown as Array<[string]>;
  const lastAcked = got[0]![1][299]![0];
  expect(left.length).toBeGreaterThanOrEqual(200);
  // Every entry the group has not acked is still there.
  const unread = (await redis.xrange(p.stream, `(${lastAcked}`, '+')).length;
  expect(unread).toBe(200);

  // Past the hard cap a group that never reads stops holding the stream.
  const tiny = makeBus(s, 'gateway', { maxLen: 10, hardMaxLen: 50 });
  await new Promise((r) => setTimeout(r, 5));
  await tiny.publishMany(Array.from({ length: 100 }, (_, j) => ({ type: 'usage.recorded' as const, data: usage(j), meta: { correlation_id: 'c' } })));
  const forced = await tiny.trim();
  expect(forced.forced).toBe(true);
  expect(await redis.xlen(p.stream)).toBeLessThan(300);
});

test('stop lets in-flight handlers finish and acks them', async () => {
  const s = `stop${n++}`;
  const bus = makeBus(s, 'ledger');
  let finished = 0;
  bus.subscribe('usage.recorded', async () => {
    await new Promise((r) => setTimeout(r, 200));
    finished++;
  });
  await bus.start();
  await makeBus(s, 'gateway').publish('usage.recorded', usage(1), { correlation_id: 'c' });
  expect(await waitFor(async () => (await bus.pendingCount()) === 1)).toBe(true);
  await bus.stop();
  expect(finished).toBe(1);
  expect(await bus.pendingCount()).toBe(0);
});

test('a second connection sees the same stream (instances are separate processes in production)', async () => {
  const s = `conn${n++}`;
  const other: Redis = createRedis(TEST_REDIS_URL);
  try {
    const p = new EventBus({ redis: other, prefix: `${prefix}:${s}`, service: 'gateway' });
    const e = await p.publish('workflow.started', { workflow: 'vision' }, { correlation_id: 'x', user_id: 'u' });
    const mine = makeBus(s, 'reader');
    const [stored] = await mine.history();
    expect(stored!.event).toEqual(e);
    expect(stored!.event.source).toBe('gateway');
  } finally {
    await other.quit();
  }
});

async function publishUsage(bus: EventBus, count: number, from = 0): Promise<string[]> {
  const events = await bus.publishMany(
    Array.from({ length: count }, (_, i) => ({ type: 'usage.recorded' as const, data: usage(from + i), meta: { correlation_id: `c${from + i}` } })),
  );
  return events.map((e) => e.id);
}


// Batch subscriptions (subscribeBatch).

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

test('a batch of one event is retried like any handler: a passing failure is not dead-lettered', async () => {
  const s = `single${n++}`;
  const consumer = makeBus(s, 'ledger', { handlerAttempts: 3 });
  const attempts: number[] = [];
  consumer.subscribeBatch('usage.recorded', (items) => {
    attempts.push(items[0]!.ctx.attempt);
    if (attempts.length === 1) throw new Error('redis blip');
  });
  await consumer.start();
  await publishUsage(makeBus(s, 'gateway'), 1);
  expect(await waitFor(async () => attempts.length === 2 && (await consumer.pendingCount()) === 0)).toBe(true);
  expect(attempts).toEqual([1, 2]);
  expect(await consumer.deadLetters()).toEqual([]);
});
