import { createEvent, type AnyEvent, EventBus, JourneyStore, SKETCH_RELATIVE_ACCURACY } from '@tollgate/shared';
import { testRedis } from '@tollgate/shared/src/testing';
import { abandonIdle, advance, TemplateCache } from '../src/state-machine';

/**
 * The journey state machine on real Redis, driven directly with the events the bus would deliver:
 * idempotency under redelivery, and the per-version analytics of 1,000 scripted journeys against
 * what the script intended.
 */

const { redis, prefix, cleanup } = testRedis('journeys-sm');
const store = new JourneyStore(redis, prefix, 'journeys');
const templates = new TemplateCache(store);
const bus = new EventBus({ redis, prefix, service: 'journeys-test' });
const T0 = Date.parse('2026-12-01T10:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();
let seq = 0;

afterAll(async () => {
  await cleanup();
});

const sha = 'a'.repeat(64);
function chat(journey: string, at: number, opts: { step?: string; id?: string; user?: string } = {}): AnyEvent {
  return createEvent(
    'chat.response_generated',
    { conversation_id: 'c', provider: 'openai', model: 'gpt-4o-mini', response_chars: 5, input_tokens: 1, output_tokens: 1, latency_ms: 1, attempts: 1, fallback_used: false },
    { id: opts.id ?? `ev-${++seq}`, correlation_id: `req-${seq}`, user_id: opts.user ?? 'u', project_id: 'p', journey_id: journey, occurred_at: iso(at), ...(opts.step && { journey_step: opts.step }) },
    'chat-workflow',
  ) as AnyEvent;
}
function vision(journey: string, at: number, user = 'u'): AnyEvent {
  return createEvent(
    'vision.analysis_completed',
    { provider: 'deepseek', model: 'deepseek-vl2', cached: false, latency_ms: 1, image_sha256: sha, quality: 'standard', degraded: false },
    { id: `ev-${++seq}`, correlation_id: `req-${seq}`, user_id: user, project_id: 'p', journey_id: journey, occurred_at: iso(at) },
    'vision',
  ) as AnyEvent;
}
function cost(journey: string, micros: number, user = 'u'): AnyEvent {
  return createEvent(
    'cost.recorded',
    {
      entry_id: `le-${++seq}`, usage_event_id: `u-${seq}`, amount_micros: micros, price_version: '2026-01-01', provider: 'openai', model: 'gpt-4o-mini', service: 'chat-workflow',
      operation: 'chat', units: { input_tokens: 1 }, cached: false, occurred_at: iso(T0), totals: [],
    },
    { id: `cost-${seq}`, correlation_id: `req-${seq}`, user_id: user, project_id: 'p', journey_id: journey },
    'cost-ledger',
  ) as AnyEvent;
}

const SCRIPTED = {
  title: 'Scripted',
  abandon_after_seconds: 60,
  steps: [
    { key: 'a', title: 'A', completion: { event: 'chat.response_generated' } },
    { key: 'b', title: 'B', weight: 2, depends_on: ['a'], completion: { event: 'vision.analysis_completed' } },
    { key: 'c', title: 'C', weight: 3, depends_on: ['b'], completion: { event: 'chat.response_generated', match: { step: 'c' } } },
    { key: 'extra', title: 'Optional', required: false, depends_on: ['a'], completion: { event: 'chat.response_generated', match: { step: 'extra' } } },
  ],
};

test('a redelivered event completes its step once; a tagged event completes only its step; journey.* events are appended with the transition', async () => {
  await store.publishTemplate('replay', SCRIPTED, 'test');
  const { doc } = await store.start({ user_id: 'u', project_id: 'p' }, 'replay', { correlation_id: 'start', now: new Date(T0) });
  const first = chat(doc.id, T0 + 1_000);
  expect(await advance(store, templates, first)).toBe('applied');
  // The same event again (redelivery, replay, a second instance): nothing changes.
  expect(await advance(store, templates, first)).toBe('seen');
  expect(await Promise.all([advance(store, templates, first), advance(store, templates, first)])).toEqual(['seen', 'seen']);
  // Tagged for a step whose dependency is open: no step; untagged chat cannot complete c (it needs the tag).
  expect(await advance(store, templates, chat(doc.id, T0 + 2_000, { step: 'c' }))).toBe('no_step');
  expect(await advance(store, templates, vision(doc.id, T0 + 3_000))).toBe('applied');
  expect(await advance(store, templates, chat(doc.id, T0 + 4_000))).toBe('no_step');
  expect(await advance(store, templates, chat(doc.id, T0 + 5_000, { step: 'c' }))).toBe('applied');

  const after = (await store.get(doc.id))!.doc;
  expect(after.state).toBe('completed');
  expect(after.steps.map((s) => [s.key, s.status, s.time_in_step_ms])).toEqual([
    ['a', 'completed', 1_000],
    ['b', 'completed', 2_000],
    ['c', 'completed', 2_000],
    ['extra', 'pending', undefined],
  ]);
  expect(after.steps[0]!.by_event_id).toBe(first.id);
  const stats = await store.stats('replay');
  expect([stats.started, stats.completed, stats.steps.map((s) => s.completed)]).toEqual([1, 1, [1, 1, 1, 0]]);
  // Events on the bus: exactly one per transition, in order, stamped with the journey.
  const history = await bus.history({ types: 'journey.*', last: 100 });
  const mine = history.filter((h) => h.event.journey_id === doc.id).map((h) => [h.event.type, (h.event.data as { step?: string }).step]);
  expect(mine).toEqual([['journey.started', undefined], ['journey.step_completed', 'a'], ['journey.step_completed', 'b'], ['journey.step_completed', 'c'], ['journey.completed', undefined]]);
  // Nothing happens to a completed journey but its spend.
  expect(await advance(store, templates, chat(doc.id, T0 + 6_000, { step: 'extra' }))).toBe('not_active');
  const c = cost(doc.id, 700);
  expect(await advance(store, templates, c)).toBe('applied');
  expect(await advance(store, templates, c)).toBe('seen');
  expect((await store.stats('replay')).cost_completed.micros).toBe(700);
});

test('analytics over 1,000 scripted journeys reproduce the completion rate, drop-off, time in step and cost per completed journey the script intended', async () => {
  const t = await store.publishTemplate('scripted', SCRIPTED, 'test');
  const N = 1_000;
  // Intended: 80% complete a, 75% of those b, 75% of those c -> 450 completed (45%).
  const reachA = (i: number) => i < 800;
  const reachB = (i: number) => i < 600;
  const reachC = (i: number) => i < 450;
  // Time in step a: 1..100 s by i % 100; b: 10 s flat; c: 2..200 s.
  const timeA = (i: number) => ((i % 100) + 1) * 1_000;
  const timeC = (i: number) => ((i % 100) + 1) * 2_000;
  const ids: string[] = [];
  const exactA: number[] = [];
  const exactC: number[] = [];
  const drive = async (i: number) => {
    const start = T0 + i;
    const { doc } = await store.start({ user_id: `u${i % 37}`, project_id: 'p' }, 'scripted', { correlation_id: `s${i}`, now: new Date(start) });
    ids[i] = doc.id;
    const user = `u${i % 37}`;
    let at = start;
    if (!reachA(i)) return;
    await advance(store, templates, cost(doc.id, 100, user));
    at += timeA(i);
    exactA.push(timeA(i));
    expect(await advance(store, templates, chat(doc.id, at, { user }))).toBe('applied');
    if (!reachB(i)) return;
    at += 10_000;
    expect(await advance(store, templates, vision(doc.id, at, user))).toBe('applied');
    if (!reachC(i)) return;
    await advance(store, templates, cost(doc.id, 250, user));
    at += timeC(i);
    exactC.push(timeC(i));
    expect(await advance(store, templates, chat(doc.id, at, { step: 'c', user }))).toBe('applied');
    // Spend that arrives after completion still counts toward the completed journey.
    await advance(store, templates, cost(doc.id, 650, user));
  };
  for (let i = 0; i < N; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => drive(i + j)));

  // Every journey left open is idle once the window has passed: the sweep abandons all of them, once.
  const later = Date.now() + 120_000;
  let abandoned = 0;
  for (let n; (n = await abandonIdle(store, templates, later)) > 0; ) abandoned += n;
  expect(abandoned).toBe(550);
  expect(await abandonIdle(store, templates, later)).toBe(0);

  const s = await store.stats('scripted', t.version);
  expect([s.started, s.completed, s.abandoned, s.cancelled, s.active]).toEqual([1000, 450, 550, 0, 0]);
  expect(s.completion_rate).toBe(0.45);
  const byKey = new Map(s.steps.map((x) => [x.key, x]));
  expect(['a', 'b', 'c'].map((k) => [k, byKey.get(k)!.reached, byKey.get(k)!.completed, byKey.get(k)!.drop_off, byKey.get(k)!.abandoned_here])).toEqual([
    ['a', 1000, 800, 200, 200],
    ['b', 800, 600, 200, 200],
    ['c', 600, 450, 150, 150],
  ]);
  expect([byKey.get('a')!.conversion, byKey.get('b')!.conversion, byKey.get('c')!.conversion]).toEqual([0.8, 0.75, 0.75]);
  expect([byKey.get('a')!.drop_off_rate, byKey.get('c')!.drop_off_rate]).toEqual([0.2, 0.25]);
  // Quantiles from DDSketch bins: within the sketch's relative accuracy of the exact ones (rounded to ms).
  const exact = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;
  const near = (got: number | null, want: number) => Math.abs(got! - want) <= want * SKETCH_RELATIVE_ACCURACY + 1;
  expect([near(byKey.get('a')!.time_in_step_p50_ms, exact(exactA, 0.5)), near(byKey.get('a')!.time_in_step_p90_ms, exact(exactA, 0.9))]).toEqual([true, true]);
  expect([near(byKey.get('b')!.time_in_step_p50_ms, 10_000), near(byKey.get('c')!.time_in_step_p90_ms, exact(exactC, 0.9))]).toEqual([true, true]);
  // 100 + 250 before completion and 650 after: 1,000 micros per completed journey, exactly.
  expect(s.cost_completed.micros).toBe(450 * 1_000);
  expect(s.cost_per_completed).toEqual({ micros: 1_000, usd: '0.001000' });

  // The abandoned ones say where they stopped.
  const sample = (await store.get(ids[500]!))!.doc;
  expect([sample.state, sample.steps.filter((x) => x.status === 'completed').map((x) => x.key)]).toEqual(['abandoned', ['a', 'b']]);
}, 60_000);

test('a journey stays on the template version it started with when a new version is published', async () => {
  await store.publishTemplate('versioned', SCRIPTED, 'test');
  const { doc: old } = await store.start({ user_id: 'u', project_id: 'p' }, 'versioned', { correlation_id: 'v1' });
  const v2 = await store.publishTemplate('versioned', { title: 'Shorter', steps: [{ key: 'a', title: 'A', completion: { event: 'chat.response_generated' } }] }, 'test');
  expect(v2.version).toBe(2);
  const { doc: fresh } = await store.start({ user_id: 'u', project_id: 'p' }, 'versioned', { correlation_id: 'v2' });
  expect([old.template_version, fresh.template_version]).toEqual([1, 2]);
  await advance(store, templates, chat(old.id, Date.now()));
  await advance(store, templates, chat(fresh.id, Date.now()));
  const [o, f] = await Promise.all([store.get(old.id), store.get(fresh.id)]);
  expect([o!.doc.state, o!.doc.steps.length, (await store.view(o!.doc)).progress_pct]).toEqual(['active', 4, 16.7]);
  expect([f!.doc.state, f!.doc.steps.length]).toEqual(['completed', 1]);
  expect([(await store.stats('versioned', 1)).started, (await store.stats('versioned', 2)).completed]).toEqual([1, 1]);
});

describe('through the consumer, on a backlog (the service restarting or behind)', () => {
  const ORDERED = {
    title: 'Ordered',
    abandon_after_seconds: 3_600,
    steps: [
      { key: 'ask', title: 'Ask', completion: { event: 'chat.response_generated' } },
      { key: 'photo', title: 'Photo', depends_on: ['ask'], completion: { event: 'vision.analysis_completed' } },
      { key: 'plan', title: 'Plan', depends_on: ['photo'], completion: { event: 'chat.response_generated' } },
    ],
  };

  async function drain(publisher: EventBus, events: AnyEvent[]) {
    const { consumeForJourneys } = await import('../src/consumer');
    for (const e of events) await publisher.publishMany([{ type: e.type, data: e.data, meta: { ...e, correlation_id: e.correlation_id } } as never]);
    // The service's own bus settings: many handlers at once, large reads.
    const consumer = new EventBus({ redis, prefix, service: `journeys-backlog-${++seq}`, concurrency: 256, batchSize: 500, lingerMs: 100 });
    const { counts, stop } = consumeForJourneys(consumer, store, templates);
    await consumer.start();
    const total = () => Object.values(counts).reduce((a, b) => a + b, 0);
    for (let i = 0; i < 500 && total() < events.length; i++) await new Promise((r) => setTimeout(r, 20));
    stop();
    await consumer.stop();
    return { counts, dead: await consumer.deadLetters() };
  }

  test("a journey's events queued before the service reads them complete its steps in order", async () => {
    await store.publishTemplate('ordered', ORDERED, 'test');
    const { doc } = await store.start({ user_id: 'u', project_id: 'p' }, 'ordered', { correlation_id: 'o1' });
    const t = Date.now();
    const { counts, dead } = await drain(bus, [chat(doc.id, t), vision(doc.id, t + 1), chat(doc.id, t + 2)]);
    expect(dead).toEqual([]);
    expect(counts.applied).toBe(3);
    const after = (await store.get(doc.id))!.doc;
    expect(after.steps.map((s) => [s.key, s.status])).toEqual([['ask', 'completed'], ['photo', 'completed'], ['plan', 'completed']]);
    expect(after.state).toBe('completed');
  });

  test("a burst of 200 cost events for one journey is counted whole, none dead-lettered", async () => {
    const { doc } = await store.start({ user_id: 'u', project_id: 'p' }, 'ordered', { correlation_id: 'o2' });
    const { counts, dead } = await drain(bus, Array.from({ length: 200 }, () => cost(doc.id, 7)));
    expect(dead).toEqual([]);
    expect(counts.applied).toBe(200);
    expect((await store.get(doc.id))!.doc.cost_micros).toBe(1_400);
  });
});

test('a template may say "__VERSION__" anywhere: the version is numbered, not substituted into text', async () => {
  const t = await store.publishTemplate('quoted', { title: '__VERSION__', steps: [{ key: 'a', title: '__VERSION__', completion: { event: 'chat.response_generated', match: { model: '__VERSION__' } } }] }, 'test');
  expect(t.version).toBe(1);
  const read = await store.template('quoted');
  expect(read).toMatchObject({ version: 1, title: '__VERSION__', steps: [{ title: '__VERSION__', completion: { match: { model: '__VERSION__' } } }] });
  expect((await store.templates()).some((x) => x.key === 'quoted')).toBe(true);
});
