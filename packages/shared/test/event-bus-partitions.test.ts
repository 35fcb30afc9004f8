import calculateSlot from 'cluster-key-slot';
import type Redis from 'ioredis';
import type { Cluster } from 'ioredis';
import { EventBus, type EventBusOptions } from '../src/bus/event-bus';
import { EventTail } from '../src/bus/event-tail';
import { busPartitionPattern, busPartitions, busStreamKey, partitionOf, slotRange } from '../src/bus/partitions';
import { createEvent, type EventEnvelope } from '../src/events/envelope';
import { isCluster, mastersOf, scanKeys } from '../src/redis';
import { testRedis, waitFor } from '../src/testing';

const { redis, prefix, cleanup } = testRedis('buspart');
const P = 4;
const buses: EventBus[] = [];
const tails: EventTail[] = [];
let n = 0;

/** Each test gets its own bus under the file's prefix, on P partitions unless told otherwise. */
function makeBus(sub: string, service: string, extra: Partial<EventBusOptions> = {}): EventBus {
  const bus = new EventBus({ redis, prefix: `${prefix}:${sub}`, service, partitions: P, blockMs: 50, retryDelayMs: 5, ...extra });
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

/** `count` correlation ids that the placement sends to `partition`. */
function correlationsIn(partition: number, count: number, partitions = P): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (partitionOf(`corr-${i}`, partitions) === partition) out.push(`corr-${i}`);
  return out;
}

/** The fields a stream entry of `event` has, for entries written by hand as a script would. */
const entryOf = (e: ReturnType<typeof createEvent>) => ['type', e.type, 'event', JSON.stringify(e)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterEach(async () => {
  await Promise.all(tails.splice(0).map((t) => t.stop()));
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});
afterAll(async () => {
  // The partitions' own tags put them outside the prefix's pattern, which is all cleanup removes.
  for await (const keys of scanKeys(redis, busPartitionPattern(prefix))) for (const key of keys) await redis.unlink(key);
  await cleanup();
});

test('placement: with 6 partitions each stream and its dead letters sit in their own sixth of the slots, two per master of a 3-master cluster', async () => {
  const layout = busPartitions('{tollgate}', 6);
  expect(layout).toHaveLength(6);
  expect(new Set(layout.map((p) => p.stream)).size).toBe(6);
  const slots = layout.map((p) => calculateSlot(p.stream));
  for (const [i, p] of layout.entries()) {
    const [first, last] = slotRange(i, 6);
    expect(slots[i]).toBeGreaterThanOrEqual(first);
    expect(slots[i]).toBeLessThanOrEqual(last);
    // Equal ranges: a sixth of 16,384 each, give or take the rounding.
    expect(Math.abs(last - first + 1 - 16_384 / 6)).toBeLessThan(1);
    // deadLetter() writes the dead letter and acks the entry in one MULTI: one slot.
    expect(calculateSlot(p.deadLetters)).toBe(slots[i]);
    // Tags start from the prefix's own.
    expect(p.stream.startsWith('{tollgate')).toBe(true);
  }
  // What `redis-cli --cluster create` gives 3 masters: partitions 2i and 2i+1 on master i.
  const masterRanges = [[0, 5460], [5461, 10922], [10923, 16383]] as const;
  const masterOf = (slot: number) => masterRanges.findIndex(([a, b]) => slot >= a && slot <= b);
  expect(slots.map(masterOf)).toEqual([0, 0, 1, 1, 2, 2]);
  // The home partition is the one-partition bus's stream, in whichever range its slot falls.
  expect(layout.filter((p) => p.stream === '{tollgate}:bus')).toHaveLength(1);

  // Different namespaces never share a key; one partition is today's layout exactly.
  const a = busPartitions(`${prefix}:a`, 6).map((p) => p.stream);
  const b = busPartitions(`${prefix}:b`, 6).map((p) => p.stream);
  expect(a.filter((k) => b.includes(k))).toEqual([]);
  expect(busPartitions('{tollgate}', 1)).toEqual([{ stream: '{tollgate}:bus', deadLetters: '{tollgate}:bus:dead' }]);
  const single = new EventBus({ redis, prefix: '{tollgate}', service: 'x' });
  expect([single.stream, single.deadLetterStream, single.streams]).toEqual(['{tollgate}:bus', '{tollgate}:bus:dead', ['{tollgate}:bus']]);
  // A prefix without braces is its own tag content.
  expect(busPartitions('tollgate', 6).every((p) => p.stream === 'tollgate:bus' || p.stream.startsWith('{tollgate:bus:'))).toBe(true);
  expect(() => busPartitions('{tollgate}', 0)).toThrow(RangeError);
  expect(() => busPartitions('{tollgate}', 257)).toThrow(RangeError);

  // On a real cluster, the masters that serve the slots: an even share each.
  if (isCluster(redis)) {
    await redis.ping();
    const masters = mastersOf(redis).length;
    const owner = (slot: number) => (redis as unknown as Cluster).slots[slot]?.[0];
    const perMaster = new Map<string, number>();
    for (const p of busPartitions(`${prefix}:placed`, 6)) {
      const key = owner(calculateSlot(p.stream))!;
      perMaster.set(key, (perMaster.get(key) ?? 0) + 1);
    }
    expect(perMaster.size).toBe(masters);
    expect([...perMaster.values()].every((c) => c === 6 / masters)).toBe(true);
  }
});

test('the placement hash of a correlation id is stable (a change would reorder requests across a rolling deploy)', () => {
  expect(['req-1', 'req-2', 'breaker:openai', 'flags:7', 'c0'].map((c) => [partitionOf(c, 4), partitionOf(c, 6)])).toEqual([
    [1, 3], [0, 0], [1, 1], [3, 5], [2, 0],
  ]);
  expect(partitionOf('anything', 1)).toBe(0);
});

test('events land in every partition, and the events of one correlation id in one partition, in publish order', async () => {
  const s = `spread${n++}`;
  const bus = makeBus(s, 'gateway');
  const correlations = Array.from({ length: 24 }, (_, i) => `req-${i}`);
  // Interleaved, half through publishMany, half through publish.
  for (let round = 0; round < 10; round++) {
    if (round % 2 === 0) {
      await bus.publishMany(correlations.map((c, i) => ({ type: 'usage.recorded' as const, data: usage(round * 100 + i), meta: { correlation_id: c } })));
    } else {
      for (const [i, c] of correlations.entries()) await bus.publish('usage.recorded', usage(round * 100 + i), { correlation_id: c });
    }
  }
  expect(bus.streams).toHaveLength(P);
  const lengths = await Promise.all(bus.streams.map((k) => redis.xlen(k)));
  expect(lengths.every((l) => l > 0)).toBe(true);
  expect(lengths.reduce((a, b) => a + b, 0)).toBe(240);

  for (const [p, stream] of bus.streams.entries()) {
    const entries = (await redis.xrange(stream, '-', '+')).map(([, f]) => JSON.parse(f[f.indexOf('event') + 1]!) as { correlation_id: string; data: { units: { input_tokens: number } } });
    const byCorrelation = new Map<string, number[]>();
    for (const e of entries) {
      expect(partitionOf(e.correlation_id, P)).toBe(p);
      byCorrelation.set(e.correlation_id, [...(byCorrelation.get(e.correlation_id) ?? []), e.data.units.input_tokens]);
    }
    for (const [c, seq] of byCorrelation) {
      const i = correlations.indexOf(c);
      expect(seq).toEqual(Array.from({ length: 10 }, (_, round) => round * 100 + i));
    }
  }
});

test("a journey's events share one partition whatever request they come from, and reach the journey service in publishing order", async () => {
  const s = `journey${n++}`;
  const publisher = makeBus(s, 'chat-workflow');
  const journeys = ['jrn_a', 'jrn_b'];
  const published: Array<{ journey?: string; c: string; i: number }> = [];
  // A backlog: requests of two journeys (each its own correlation id) between requests with none.
  for (let i = 0; i < 30; i++) {
    const journey = i % 3 === 2 ? undefined : journeys[i % 3]!;
    const c = `req-${i}`;
    await publisher.publish('usage.recorded', usage(i), { correlation_id: c, ...(journey && { journey_id: journey }) });
    published.push({ ...(journey && { journey }), c, i });
  }
  expect(new Set(published.map((e) => partitionOf(e.c, P))).size).toBeGreaterThan(1); // the requests alone would spread
  for (const [p, stream] of publisher.streams.entries()) {
    for (const [, f] of await redis.xrange(stream, '-', '+')) {
      const e = JSON.parse(f[f.indexOf('event') + 1]!) as { correlation_id: string; journey_id?: string };
      expect(partitionOf(e.journey_id ?? e.correlation_id, P)).toBe(p);
    }
  }
  const follower = makeBus(s, 'journeys', { concurrency: 256 });
  const seen = new Map<string, number[]>();
  follower.subscribe('*', (e) => {
    if (e.type === 'usage.recorded') seen.set(e.journey_id!, [...(seen.get(e.journey_id!) ?? []), e.data.units.input_tokens ?? -1]);
  }, { journeysOnly: true });
  await follower.start();
  expect(await waitFor(() => [...seen.values()].reduce((a, b) => a + b.length, 0) === 20)).toBe(true);
  for (const j of journeys) expect(seen.get(j)).toEqual(published.filter((e) => e.journey === j).map((e) => e.i));
});

test('two instances of one group split the events of every partition exactly once; another group gets them all, in order per correlation id', async () => {
  const s = `split${n++}`;
  const seen = { ledger: [] as Array<{ id: string; c: string; i: number; partition: number }>, alertA: [] as string[], alertB: [] as string[] };
  const ledger = makeBus(s, 'ledger');
  const alertA = makeBus(s, 'alerting', { consumer: 'a' });
  const alertB = makeBus(s, 'alerting', { consumer: 'b' });
  ledger.subscribe('usage.recorded', (e, ctx) => void seen.ledger.push({ id: e.id, c: e.correlation_id, i: e.data.units.input_tokens ?? -1, partition: ctx.partition }));
  alertA.subscribe('usage.recorded', (e) => void seen.alertA.push(e.id));
  alertB.subscribe('usage.recorded', (e) => void seen.alertB.push(e.id));
  await Promise.all([ledger.start(), alertA.start(), alertB.start()]);

  const publisher = makeBus(s, 'gateway');
  const published: string[] = [];
  for (let batch = 0; batch < 10; batch++) {
    const events = await publisher.publishMany(
      Array.from({ length: 100 }, (_, i) => ({ type: 'usage.recorded' as const, data: usage(batch * 100 + i), meta: { correlation_id: `c${i % 40}` } })),
    );
    published.push(...events.map((e) => e.id));
  }

  expect(await waitFor(() => seen.ledger.length >= 1000 && seen.alertA.length + seen.alertB.length >= 1000)).toBe(true);
  await sleep(150); // room for any duplicate to show up
  expect(seen.ledger).toHaveLength(1000);
  expect(new Set(seen.ledger.map((e) => e.id))).toEqual(new Set(published));
  expect(new Set(seen.ledger.map((e) => e.partition))).toEqual(new Set([0, 1, 2, 3]));
  const alerting = [...seen.alertA, ...seen.alertB];
  expect(alerting).toHaveLength(1000);
  expect(new Set(alerting)).toEqual(new Set(published));
  expect(seen.alertA.length).toBeGreaterThan(0);
  expect(seen.alertB.length).toBeGreaterThan(0);
  // Handlers are called in each partition's read order: one request's events arrive in order.
  const order = new Map<string, number[]>();
  for (const e of seen.ledger) order.set(e.c, [...(order.get(e.c) ?? []), e.i]);
  for (const seq of order.values()) expect(seq).toEqual([...seq].sort((a, b) => a - b));
  expect(await ledger.pendingCount()).toBe(0);
  expect(await waitFor(async () => (await alertA.pendingCount()) === 0)).toBe(true);
});

test("entries a crashed consumer left pending in every partition are reclaimed by another instance; pendingCount sums the partitions", async () => {
  const s = `reclaim${n++}`;
  const publisher = makeBus(s, 'gateway');
  const survivor = makeBus(s, 'ledger', { consumer: 'survivor', claimIdleMs: 200, claimIntervalMs: 50, startId: '$' });
  const handled: Array<{ id: string; deliveries: number; partition: number }> = [];
  survivor.subscribe('usage.recorded', (e, ctx) => void handled.push({ id: e.id, deliveries: ctx.deliveries, partition: ctx.partition }));
  await survivor.start();
  await survivor.stop(); // the group exists on every partition; now the "crashed" instance takes the events
  const events = [];
  for (let p = 0; p < P; p++) {
    for (const [i, c] of correlationsIn(p, 3).entries()) events.push(await publisher.publish('usage.recorded', usage(p * 10 + i), { correlation_id: c }));
  }

  // What a SIGKILLed instance leaves behind: entries delivered to it and never acked, in each partition.
  for (const stream of survivor.streams) {
    const taken = (await redis.xreadgroup('GROUP', 'ledger', 'crashed', 'COUNT', 100, 'STREAMS', stream, '>')) as Array<[string, unknown[]]>;
    expect(taken[0]![1]).toHaveLength(3);
  }
  expect(await survivor.pendingCount()).toBe(3 * P);

  const second = makeBus(s, 'ledger', { consumer: 'survivor', claimIdleMs: 200, claimIntervalMs: 50 });
  second.subscribe('usage.recorded', (e, ctx) => void handled.push({ id: e.id, deliveries: ctx.deliveries, partition: ctx.partition }));
  await second.start();
  expect(await waitFor(() => handled.length >= 3 * P)).toBe(true);
  expect(handled.map((h) => h.id).sort()).toEqual(events.map((e) => e.id).sort());
  expect(handled.every((h) => h.deliveries === 2)).toBe(true);
  expect(new Set(handled.map((h) => h.partition))).toEqual(new Set([0, 1, 2, 3]));
  expect(await waitFor(async () => (await second.pendingCount()) === 0)).toBe(true);
});

test("a failing handler's and a bad entry's dead letters are found in every partition's dead-letter stream, newest first", async () => {
  const s = `dlq${n++}`;
  const bus = makeBus(s, 'alerting', { handlerAttempts: 2, concurrency: 1 });
  bus.subscribe('usage.recorded', (e) => {
    throw new Error(`boom for ${e.data.request_id}`);
  }, { name: 'always-fails' });
  const good: string[] = [];
  bus.subscribe('*', (e) => void good.push(e.id), { name: 'good' });
  await bus.start();
  const publisher = makeBus(s, 'gateway');
  const events = [];
  // One event at a time, each dead-lettered before the next is published: the dead letters'
  // order is the publishing order, going round the partitions.
  for (let round = 0; round < 2; round++) {
    for (let p = 0; p < P; p++) {
      events.push(await publisher.publish('usage.recorded', usage(events.length), { correlation_id: correlationsIn(p, 2)[round]! }));
      expect(await waitFor(async () => (await bus.deadLetters()).length === events.length)).toBe(true);
      await sleep(2);
    }
  }
  // Not an event at all, written straight into the last partition.
  await redis.xadd(bus.streams[P - 1]!, '*', 'type', 'usage.recorded', 'event', '{"not":"an event"}');

  expect(await waitFor(async () => (await bus.deadLetters()).length === events.length + 1)).toBe(true);
  const dead = await bus.deadLetters();
  expect(dead[0]).toMatchObject({ handler: '(decode)', partition: P - 1, raw: '{"not":"an event"}' });
  const failed = dead.slice(1);
  expect(failed.map((d) => JSON.parse(d.raw).id)).toEqual(events.map((e) => e.id).reverse());
  expect(failed.every((d) => d.handler === 'always-fails' && d.attempts === 2 && d.group === 'alerting')).toBe(true);
  expect(failed.map((d) => d.partition)).toEqual([3, 2, 1, 0, 3, 2, 1, 0]);
  // Each dead letter sits in its own partition's stream, beside the entry it was acked from.
  for (const [p, stream] of bus.deadLetterStreams.entries()) expect(await redis.xlen(stream)).toBe(dead.filter((d) => d.partition === p).length);
  expect((await bus.deadLetters(3)).map((d) => d.streamId)).toEqual(dead.slice(0, 3).map((d) => d.streamId));
  expect(good.sort()).toEqual(events.map((e) => e.id).sort());
  expect(await waitFor(async () => (await bus.pendingCount()) === 0)).toBe(true);
});

test('an entry redelivered more than maxDeliveries times in a partition other than the first is dead-lettered as poison there', async () => {
  const s = `poison${n++}`;
  const bus = makeBus(s, 'ledger', { claimIdleMs: 1, claimIntervalMs: 20, maxDeliveries: 2 });
  const publisher = makeBus(s, 'gateway');
  const [c] = correlationsIn(2, 1);
  const ev = await publisher.publish('usage.recorded', usage(1), { correlation_id: c! });
  const stream = bus.streams[2]!;
  for (const k of bus.streams) await redis.xgroup('CREATE', k, 'ledger', '0', 'MKSTREAM');
  await redis.xreadgroup('GROUP', 'ledger', 'dead1', 'STREAMS', stream, '>');
  await redis.xclaim(stream, 'ledger', 'dead2', 0, (await redis.xrange(stream, '-', '+'))[0]![0]);
  const handled: string[] = [];
  bus.subscribe('*', (e) => void handled.push(e.id));
  await bus.start();
  expect(await waitFor(async () => (await bus.deadLetters()).length === 1)).toBe(true);
  const [dead] = await bus.deadLetters();
  expect(dead).toMatchObject({ handler: '(delivery)', partition: 2 });
  expect(dead!.reason).toMatch(/delivered 3 times/);
  expect(JSON.parse(dead!.raw).id).toBe(ev.id);
  expect(await redis.xlen(bus.deadLetterStreams[2]!)).toBe(1);
  expect(handled).toEqual([]);
  expect(await bus.pendingCount()).toBe(0);
});

test('history and replay merge every partition in time order; equal times order by sequence, then partition', async () => {
  const s = `hist${n++}`;
  const p = makeBus(s, 'chat-workflow');
  const corr = (i: number) => `h${i}`;
  const first = await p.publish('workflow.started', { workflow: 'chat' }, { correlation_id: corr(100) });
  await sleep(5);
  const mid = Date.now();
  await sleep(5);
  const rest = [];
  for (let i = 0; i < 20; i++) {
    rest.push(await p.publish('usage.recorded', usage(i), { correlation_id: corr(i) }));
    await sleep(2); // distinct milliseconds: ids of different streams would otherwise tie
  }
  const last = await p.publish('workflow.completed', { workflow: 'chat', duration_ms: 9 }, { correlation_id: corr(101) });
  expect(new Set([first, ...rest, last].map((e) => partitionOf(e.correlation_id, P))).size).toBe(P);

  const all = await p.history();
  expect(all.map((e) => e.event.id)).toEqual([first.id, ...rest.map((e) => e.id), last.id]);
  expect(all.map((e) => e.partition)).toEqual([first, ...rest, last].map((e) => partitionOf(e.correlation_id, P)));
  expect((await p.history({ last: 3 })).map((e) => e.event.id)).toEqual([rest[18]!.id, rest[19]!.id, last.id]);
  expect((await p.history({ limit: 3 })).map((e) => e.event.id)).toEqual([first.id, rest[0]!.id, rest[1]!.id]);
  expect((await p.history({ types: 'workflow.*' })).map((e) => e.event.type)).toEqual(['workflow.started', 'workflow.completed']);
  expect((await p.history({ types: ['usage.recorded'], last: 2 })).map((e) => e.event.id)).toEqual([rest[18]!.id, rest[19]!.id]);
  expect((await p.history({ since: mid, types: 'workflow.*' })).map((e) => e.event.id)).toEqual([last.id]);
  expect((await p.history({ until: mid })).map((e) => e.event.id)).toEqual([first.id]);

  const replayed: Array<[string, boolean, number]> = [];
  expect(await p.replay({ types: 'usage.recorded' }, (e, ctx) => void replayed.push([e.id, ctx.replayed, ctx.partition]))).toBe(20);
  expect(replayed).toEqual(rest.map((e) => [e.id, true, partitionOf(e.correlation_id, P)]));

  // Ids are per stream, so two partitions can hold the same time: sequence, then partition, decide.
  const t = `ties${n++}`;
  const q = makeBus(t, 'reader');
  const ev = (i: number) => createEvent('workflow.started', { workflow: 'chat' }, { correlation_id: `t${i}` }, 'test');
  const placed = [
    { stream: 3, id: '1000-0', e: ev(0) },
    { stream: 1, id: '1000-1', e: ev(1) },
    { stream: 0, id: '1000-1', e: ev(2) },
    { stream: 2, id: '999-5', e: ev(3) },
    { stream: 2, id: '1001-0', e: ev(4) },
  ];
  for (const x of placed) await redis.xadd(q.streams[x.stream]!, x.id, ...entryOf(x.e));
  expect((await q.history()).map((x) => [x.partition, x.streamId])).toEqual([[2, '999-5'], [3, '1000-0'], [0, '1000-1'], [1, '1000-1'], [2, '1001-0']]);
  expect((await q.history({ last: 2 })).map((x) => x.event.id)).toEqual([placed[1]!.e.id, placed[4]!.e.id]);
});

test('equal stream ids in two partitions are two entries: both are in flight at once and both delivered', async () => {
  const s = `sameid${n++}`;
  const bus = makeBus(s, 'ledger');
  const a = createEvent('workflow.started', { workflow: 'chat' }, { correlation_id: 'a' }, 'test');
  const b = createEvent('workflow.started', { workflow: 'vision' }, { correlation_id: 'b' }, 'test');
  await redis.xadd(bus.streams[0]!, '5-1', ...entryOf(a));
  await redis.xadd(bus.streams[1]!, '5-1', ...entryOf(b));
  const handled: Array<[string, string, number]> = [];
  let running = 0;
  let most = 0;
  bus.subscribe('workflow.started', async (e, ctx) => {
    most = Math.max(most, ++running);
    await sleep(300);
    running--;
    handled.push([e.id, ctx.streamId, ctx.partition]);
  });
  await bus.start();
  expect(await waitFor(() => handled.length === 2, 3_000)).toBe(true);
  expect(handled.sort()).toEqual([[a.id, '5-1', 0], [b.id, '5-1', 1]].sort());
  expect(most).toBe(2);
  expect(await waitFor(async () => (await bus.pendingCount()) === 0)).toBe(true);
});

test('a group lost on one partition (NOGROUP) is recreated there, and delivery goes on on every partition', async () => {
  const s = `nogroup${n++}`;
  const bus = makeBus(s, 'ledger');
  const handled: Array<[string, number]> = [];
  bus.subscribe('usage.recorded', (e, ctx) => void handled.push([e.id, ctx.partition]));
  await bus.start();
  const publisher = makeBus(s, 'gateway');
  // What a Redis restart without persistence does to one partition's stream.
  await redis.xgroup('DESTROY', bus.streams[2]!, 'ledger');
  await redis.del(bus.streams[2]!);
  const after: EventEnvelope[] = [];
  for (let p = 0; p < P; p++) after.push(await publisher.publish('usage.recorded', usage(p), { correlation_id: correlationsIn(p, 1)[0]! }));
  expect(await waitFor(() => after.every((e) => handled.some(([id]) => id === e.id)))).toBe(true);
  expect(new Set(handled.map(([, p]) => p))).toEqual(new Set([0, 1, 2, 3]));
  const groups = (await redis.xinfo('GROUPS', bus.streams[2]!)) as unknown[][];
  expect(groups.map((g) => g[1])).toEqual(['ledger']);
});

test('the home partition is <prefix>:bus: an entry a script appends there (as the journey store does) reaches every group', async () => {
  const s = `home${n++}`;
  const bus = makeBus(s, 'journeys');
  const home = busStreamKey(`${prefix}:${s}`);
  expect(bus.streams).toContain(home);
  const handled: Array<[string, number]> = [];
  bus.subscribe('*', (e, ctx) => void handled.push([e.id, ctx.partition]));
  await bus.start();
  const e = createEvent('workflow.started', { workflow: 'chat' }, { correlation_id: 'any' }, 'journeys');
  await redis.xadd(home, '*', ...entryOf(e));
  expect(await waitFor(() => handled.length === 1)).toBe(true);
  expect(handled).toEqual([[e.id, bus.streams.indexOf(home)]]);
});

test('the tail follows every partition from its newest entry, each on its own read', async () => {
  const s = `tail${n++}`;
  const publisher = makeBus(s, 'gateway');
  const before = await publisher.publishMany(Array.from({ length: 20 }, (_, i) => ({ type: 'usage.recorded' as const, data: usage(i), meta: { correlation_id: `b${i}` } })));
  const seen: Array<{ id: string; streamId: string; partition: number }> = [];
  const tail = new EventTail({ redis, prefix: `${prefix}:${s}`, partitions: P, types: 'usage.*', blockMs: 50 }, (e, streamId, partition) => void seen.push({ id: e.id, streamId, partition }));
  tails.push(tail);
  await tail.start();
  const wanted = [];
  for (let p = 0; p < P; p++) {
    for (const c of correlationsIn(p, 3)) wanted.push(await publisher.publish('usage.recorded', usage(wanted.length), { correlation_id: c }));
  }
  await publisher.publish('workflow.started', { workflow: 'chat' }, { correlation_id: 'other' }); // not a usage.* type
  expect(await waitFor(() => seen.length >= wanted.length)).toBe(true);
  await sleep(100);
  expect(seen.map((x) => x.id).sort()).toEqual(wanted.map((e) => e.id).sort());
  expect(seen.some((x) => before.some((b) => b.id === x.id))).toBe(false);
  expect(new Set(seen.map((x) => x.partition))).toEqual(new Set([0, 1, 2, 3]));
  for (const x of seen) expect((await redis.xrange(publisher.streams[x.partition]!, x.streamId, x.streamId)).length).toBe(1);
});

test('one concurrency budget for every partition: a busy partition may use all of it, all partitions together stay near it', async () => {
  const concurrency = 8;
  const measure = async (sub: string, correlation: (i: number) => string) => {
    const publisher = makeBus(sub, 'gateway');
    await publisher.publishMany(Array.from({ length: 48 }, (_, i) => ({ type: 'usage.recorded' as const, data: usage(i), meta: { correlation_id: correlation(i) } })));
    const bus = makeBus(sub, 'ledger', { concurrency });
    let running = 0;
    let most = 0;
    let done = 0;
    bus.subscribe('usage.recorded', async () => {
      most = Math.max(most, ++running);
      await sleep(40);
      running--;
      done++;
    });
    await bus.start();
    expect(await waitFor(() => done === 48)).toBe(true);
    return most;
  };
  // One correlation id, so one partition: the other partitions' idle reads must not hold it back.
  expect(await measure(`hot${n++}`, () => 'one-request')).toBe(concurrency);
  // Every partition busy: each would take `concurrency` alone if the budget were not shared. Reads
  // that were outstanding together may pass it, but stay under twice it.
  const spread = await measure(`spread${n++}`, (i) => `r${i}`);
  expect(spread).toBeGreaterThanOrEqual(concurrency / 2);
  expect(spread).toBeLessThan(2 * concurrency);
});

test('a budget smaller than the partitions starves no partition: each event is handled while the others sit idle', async () => {
  const s = `small${n++}`;
  const bus = makeBus(s, 'ledger', { concurrency: 1 });
  const handled: number[] = [];
  bus.subscribe('usage.recorded', async (_e, ctx) => {
    await sleep(120); // longer than a read blocks (50 ms): every other loop comes back and waits for the slot
    handled.push(ctx.partition);
  });
  await bus.start();
  const publisher = makeBus(s, 'gateway');
  // One at a time, round the partitions twice: a loop woken alone reads nothing from its own
  // quiet partition, and the loop of the partition that has the event must not be left waiting.
  const order = [0, 1, 2, 3, 3, 2, 1, 0];
  for (const [i, p] of order.entries()) {
    await publisher.publish('usage.recorded', usage(i), { correlation_id: correlationsIn(p, 8)[i]! });
    expect(await waitFor(() => handled.length === i + 1, 2_000)).toBe(true);
  }
  expect(handled).toEqual(order);
});

test('trim trims every partition to its share of maxLen, keeping what a group has not processed', async () => {
  const s = `trim${n++}`;
  const maxLen = 400;
  const publisher = makeBus(s, 'gateway', { maxLen });
  const consumer = makeBus(s, 'ledger', { maxLen });
  let seen = 0;
  consumer.subscribe('*', () => void seen++);
  await consumer.start();
  for (let i = 0; i < 10; i++) {
    await publisher.publishMany(Array.from({ length: 200 }, (_, j) => ({ type: 'usage.recorded' as const, data: usage(i * 200 + j), meta: { correlation_id: `c${j}` } })));
    await sleep(5); // spread ids over time, as real traffic is
  }
  expect(await waitFor(async () => seen === 2000 && (await consumer.pendingCount()) === 0)).toBe(true);
  const added = async (k: string) => {
    const info = (await redis.xinfo('STREAM', k)) as unknown[];
    return Number(info[info.indexOf('entries-added') + 1]);
  };
  const published = await Promise.all(publisher.streams.map(added));
  // A trim already running (publishing starts one every maxLen/10 events) is joined, and it may
  // have looked before the group caught up: the second one looks now.
  await publisher.trim();
  await publisher.trim();
  const lengths = await Promise.all(publisher.streams.map((k) => redis.xlen(k)));
  for (const [i, len] of lengths.entries()) {
    expect(len).toBeGreaterThanOrEqual(maxLen / P);
    expect(len).toBeLessThan(published[i]!);
  }

  // A group that has read nothing holds every partition.
  const t = `held${n++}`;
  const p2 = makeBus(t, 'gateway', { maxLen: 40, hardMaxLen: 100_000 });
  for (const k of p2.streams) await redis.xgroup('CREATE', k, 'slow-service', '0', 'MKSTREAM');
  await p2.publishMany(Array.from({ length: 400 }, (_, j) => ({ type: 'usage.recorded' as const, data: usage(j), meta: { correlation_id: `c${j}` } })));
  expect(await p2.trim()).toMatchObject({ trimmed: 0, heldBy: 'slow-service' });
  expect((await Promise.all(p2.streams.map((k) => redis.xlen(k)))).reduce((a, b) => a + b, 0)).toBe(400);
});
