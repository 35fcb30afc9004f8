import { z } from 'zod';
import { EventBus } from '../src/bus/event-bus';
import { EventTail } from '../src/bus/event-tail';
import { EVENT_CATALOG, EVENT_TYPES, type EventData, type EventType } from '../src/events/catalog';
import type { AnyEvent, EventMeta } from '../src/events/envelope';
import { InvalidEventError } from '../src/errors/tollgate-error';
import { testRedis, waitFor } from '../src/testing';
import { deepJson, fuzzSeed, malformedJson, NASTY_NUMBERS, NASTY_STRINGS, POLLUTION_KEYS, pollutionPayload, prng, prototypeSnapshot, randomJson, randomObject, randomString, type Rng } from './fuzz-kit';

/**
 * Every event type against random and malformed data: publishing refuses it with `invalid_event`
 * and writes nothing; malformed entries that reach the stream anyway (an old or foreign producer,
 * a hand-written XADD) are dead-lettered by the consumer group and never handed to a handler,
 * a tail or a history read. Seeded: `FUZZ_SEED=<n>` repeats a run.
 */

const SEED = fuzzSeed(0xe7e27);
const MARKER = `eventPolluted${SEED}`;
const { redis, prefix, cleanup } = testRedis('event-fuzz');
const buses: EventBus[] = [];
const tails: EventTail[] = [];
let streamNo = 0;

function makeBus(service: string, sub = `s${streamNo}`): EventBus {
  const bus = new EventBus({ redis, prefix: `${prefix}:${sub}`, service, blockMs: 50, retryDelayMs: 5, handlerAttempts: 1, claimIdleMs: 60_000 });
  buses.push(bus);
  return bus;
}

afterAll(async () => {
  await Promise.all([...buses.map((b) => b.stop()), ...tails.map((t) => t.stop())]);
  await cleanup();
});

const sha = 'a'.repeat(64);
const resolution = { category: 'rate_limit', strategy: 'retry_with_backoff', code: 'rate_limited', message: 'slow down', suggested_actions: ['wait'], retryable: true } as const;
const circuit = { breaker: 'openai:chat', provider: 'openai', operation: 'chat', failures: 3, reason: '503s', instance: 'i-1' };

/** One valid `data` for every type in the catalog (the test fails if a type is added without one). */
const SAMPLES: { [T in EventType]: EventData<T> } = {
  'workflow.started': { workflow: 'chat', job_id: 'j-1', attempt: 1 },
  'workflow.completed': { workflow: 'vision', job_id: 'j-1', duration_ms: 12, provider: 'gemini', model: 'gemini-2.0-flash' },
  'workflow.failed': { workflow: 'chat', duration_ms: 5, error: { ...resolution, suggested_actions: [...resolution.suggested_actions] } },
  'chat.message_received': { conversation_id: 'c-1', message_chars: 5, history_messages: 0, model_requested: 'gpt-4o-mini' },
  'chat.response_generated': {
    conversation_id: 'c-1', provider: 'openai', model: 'gpt-4o-mini', response_chars: 10, input_tokens: 3, output_tokens: 4, latency_ms: 9, attempts: 1, fallback_used: false, cached: false,
  },
  'vision.analysis_completed': { provider: 'deepseek', model: 'deepseek-vl2', cached: false, latency_ms: 20, image_sha256: sha, quality: 'standard', degraded: false },
  'rag.context_retrieved': { source: 'docs', query_chars: 10, documents: 2, latency_ms: 3 },
  'usage.recorded': {
    provider: 'openai', model: 'gpt-4o-mini', service: 'chat-workflow', operation: 'chat', units: { input_tokens: 1, output_tokens: 2 },
    usage_source: 'provider', request_id: 'r-1', cached: false, request_fingerprint: sha,
  },
  'cost.recorded': {
    entry_id: 'le_1', usage_event_id: 'u-1', amount_micros: 10, price_version: '2026-01-01', provider: 'openai', model: 'gpt-4o-mini', service: 'chat-workflow',
    operation: 'chat', units: { input_tokens: 1 }, cached: false, occurred_at: '2026-11-25T10:00:00.000Z',
    totals: [{ scope: 'user', scope_id: 'alice', period: 'day', period_key: '2026-11-25', spent_micros: 10 }],
  },
  'cost.report_generated': { period: 'day', period_key: '2026-11-25', total_micros: 10, previous_total_micros: 5, entries: 1 },
  'cost.threshold_exceeded': {
    alert_id: 'a-1', fingerprint: 'fp', state: 'firing', scope: 'user', scope_id: 'alice', period: 'day', period_key: '2026-11-25', threshold_pct: 80,
    spent_micros: 80, limit_micros: 100, hard: false, top_contributors: [{ dimension: 'model', key: 'openai/gpt-4o-mini', micros: 80 }],
  },
  'error.occurred': { service: 'chat-workflow', category: 'timeout', strategy: 'fallback_provider', code: 'provider_timeout', message: 'slow', provider: 'openai', operation: 'chat' },
  'circuit.opened': circuit,
  'circuit.closed': circuit,
  'flag.changed': {
    name: 'tollgate.kill.vision-high', kind: 'flag', action: 'updated', actor: 'operator', at: '2026-12-02T10:00:00.000Z',
    before: { name: 'tollgate.kill.vision-high', enabled: false }, after: { name: 'tollgate.kill.vision-high', enabled: true }, version: 3,
  },
  'flags.changed': { version: 3, names: ['tollgate.kill.vision-high'], actor: 'operator' },
  'flag.exposed': { flag: 'tollgate.experiment.chat-provider', variant: 'gemini', subject: 'alice', feature_enabled: true, day: '2026-12-02' },
  'request.refused': { route: '/v1/chat', reason: 'budget_exceeded', code: 'budget_exceeded', workflow: 'chat', streamed: false },
  'journey.started': { journey: 'jrn_1', template: 'kitchen-renovation', template_version: 1, external_id: 'crm-7' },
  'journey.step_completed': {
    journey: 'jrn_1', template: 'kitchen-renovation', template_version: 1, step: 'brief', by_event_id: 'e-1', by_event_type: 'chat.response_generated', time_in_step_ms: 10, progress_pct: 20,
  },
  'journey.completed': { journey: 'jrn_1', template: 'kitchen-renovation', template_version: 1, duration_ms: 100, progress_pct: 100 },
  'journey.abandoned': { journey: 'jrn_1', template: 'kitchen-renovation', template_version: 1, idle_ms: 1000, at_step: 'photos', progress_pct: 20 },
  'journey.cancelled': { journey: 'jrn_1', template: 'kitchen-renovation', template_version: 1, progress_pct: 20 },
};

const meta = (i: number): EventMeta => ({ correlation_id: `fuzz-${i}`, user_id: 'alice', project_id: 'web' });
const shapeOf = (type: EventType) => (EVENT_CATALOG[type].data as z.ZodObject).shape as Record<string, z.ZodType>;
const isOptional = (s: z.ZodType) => s.safeParse(undefined).success;

const circular = (() => {
  const c: Record<string, unknown> = { a: 1 };
  c.self = c;
  return c;
})();

/** Candidates for a field's value: wrong types, edge numbers, nasty and huge strings, objects that are not data. */
function candidates(r: Rng): unknown[] {
  return [
    undefined, null, true, false, '', 'x'.repeat(129), 'x'.repeat(1_001), 'y'.repeat(100_000), r.pick(NASTY_STRINGS), randomString(r),
    ...NASTY_NUMBERS, NaN, Infinity, -Infinity, 10n, Symbol('s'), () => 1, new Date(0), new Map([['a', 1]]), [], [1], {}, Object.create(null),
    circular, pollutionPayload(MARKER), JSON.parse(deepJson(2_000, 'array')), randomJson(r), randomObject(r),
  ];
}

function jsonRoundTrip(v: unknown): unknown[] {
  try {
    const text = JSON.stringify(v);
    return text === undefined ? [] : [JSON.parse(text)];
  } catch {
    return []; // BigInt, cycles
  }
}

/** `data` for `type` that the catalog refuses, and what was done to it. */
function invalidData(r: Rng, type: EventType, opts: { forConsume?: boolean } = {}): { data: unknown; how: string } {
  const sample = SAMPLES[type] as Record<string, unknown>;
  const shape = shapeOf(type);
  const fields = Object.keys(shape);
  const required = fields.filter((f) => !isOptional(shape[f]!));
  const kinds = opts.forConsume ? 4 : 5; // unknown keys are tolerated when reading (a newer producer may add some)
  switch (r.int(0, kinds - 1)) {
    case 0:
      return { data: r.pick([null, undefined, 0, 'text', [], [sample], true, randomString(r), 1e300]), how: 'not an object' };
    case 1: {
      const drop = r.pick(required);
      const { [drop]: _gone, ...rest } = sample;
      return { data: rest, how: `without required ${drop}` };
    }
    case 2:
    case 3: {
      // One to three fields set to values that field's own schema refuses.
      const data: Record<string, unknown> = { ...sample };
      const changed: string[] = [];
      for (let i = r.int(1, 3); i > 0; i--) {
        const f = r.pick(fields);
        // Read from the stream, a value is what JSON made of it (NaN is null, a function is gone).
        const pool = opts.forConsume ? candidates(r).flatMap((v) => jsonRoundTrip(v)) : candidates(r);
        const bad = pool.filter((v) => !shape[f]!.safeParse(v).success && v !== undefined);
        data[f] = r.pick(bad);
        changed.push(f);
      }
      return { data, how: `bad ${changed.join(',')}` };
    }
    default: {
      // Unknown keys: pollution keys as own properties, or random ones (strict at publish).
      const data: Record<string, unknown> = { ...sample };
      const key = r.chance(0.6) ? r.pick(POLLUTION_KEYS) : `zz_${randomString(r, 10)}`;
      Object.defineProperty(data, key, { value: r.chance(0.5) ? pollutionPayload(MARKER) : randomJson(r), enumerable: true, configurable: true, writable: true });
      return { data, how: `unknown key ${JSON.stringify(key)}` };
    }
  }
}

function invalidMeta(r: Rng, i: number): { meta: EventMeta; how: string } {
  const bad = r.pick<[keyof EventMeta, unknown]>([
    ['correlation_id', ''],
    ['correlation_id', 'c'.repeat(129)],
    ['correlation_id', 5],
    ['correlation_id', undefined],
    ['user_id', ''],
    ['user_id', 'u'.repeat(129)],
    ['project_id', null],
    ['id', ''],
    ['id', 'i'.repeat(129)],
    ['occurred_at', 'yesterday'],
    ['occurred_at', '2026-13-01T00:00:00Z'],
    ['occurred_at', '2026-11-25 10:00:00'],
    ['occurred_at', r.pick(NASTY_STRINGS)],
  ]);
  return { meta: { ...meta(i), [bad[0]]: bad[1] } as EventMeta, how: `meta.${bad[0]}=${JSON.stringify(bad[1])?.slice(0, 40)}` };
}

async function refusal(p: Promise<unknown>): Promise<string | null> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    if (!(err instanceof InvalidEventError) || (err as InvalidEventError).code !== 'invalid_event') return `threw ${String(err).slice(0, 200)}`;
    return null;
  }
}

test('every catalog type has a valid sample, and each sample publishes (the positive control)', async () => {
  expect(Object.keys(SAMPLES).sort()).toEqual([...EVENT_TYPES].sort());
  const bus = makeBus('control', 'control');
  for (const type of EVENT_TYPES) await bus.publish(type, SAMPLES[type] as never, meta(0));
  expect(await redis.xlen(bus.stream)).toBe(EVENT_TYPES.length);
});

test(`publish refuses random and malformed data for every event type with invalid_event, and writes nothing (seed ${SEED})`, async () => {
  const r = prng(SEED);
  const bus = makeBus('producer', 'publish');
  const protoBefore = prototypeSnapshot();
  const failures: string[] = [];
  let tried = 0;
  for (const type of EVENT_TYPES) {
    for (let i = 0; i < 60; i++) {
      const { data, how } = invalidData(r, type);
      tried++;
      const single = await refusal(bus.publish(type, data as never, meta(i)));
      if (single) failures.push(`[seed ${SEED}] ${type} #${i} ${how}: publish ${single}`);
      // All-or-nothing: one bad event in a batch writes none of the batch.
      const batch = await refusal(
        bus.publishMany([
          { type, data: SAMPLES[type] as never, meta: meta(i) },
          { type, data: data as never, meta: meta(i) },
        ] as never),
      );
      if (batch) failures.push(`[seed ${SEED}] ${type} #${i} ${how}: publishMany ${batch}`);
    }
    for (let i = 0; i < 10; i++) {
      const { meta: m, how } = invalidMeta(r, i);
      tried++;
      const res = await refusal(bus.publish(type, SAMPLES[type] as never, m));
      if (res) failures.push(`[seed ${SEED}] ${type} ${how}: publish ${res}`);
    }
  }
  // Types outside the catalog, including names that exist on every object's prototype.
  const unknownTypes = ['', 'workflow', 'workflow.*', '*', 'usage.recorded ', 'USAGE.RECORDED', 'usage.recorded\u0000', ...POLLUTION_KEYS, 'toString', 'hasOwnProperty', 'valueOf', 'x'.repeat(100)];
  for (let i = 0; i < 20; i++) unknownTypes.push(randomString(r, 20));
  for (const type of unknownTypes) {
    tried++;
    const res = await refusal(bus.publish(type as EventType, SAMPLES['usage.recorded'] as never, meta(0)));
    if (res) failures.push(`[seed ${SEED}] type ${JSON.stringify(type).slice(0, 60)}: publish ${res}`);
  }
  expect(tried).toBeGreaterThan(900);
  expect(failures).toEqual([]);
  expect(await redis.exists(bus.stream)).toBe(0); // not one entry, not even the stream
  expect(prototypeSnapshot()).toEqual(protoBefore);
  expect(({} as Record<string, unknown>)[MARKER]).toBeUndefined();
});

test(`malformed stream entries are dead-lettered by the consumer group, never delivered to a handler, a tail or history (seed ${SEED})`, async () => {
  const r = prng(SEED + 1);
  const sub = 'consume';
  const consumer = makeBus('fuzz-consumer', sub);
  const publisher = makeBus('producer', sub);
  const delivered: Array<{ via: string; id: string }> = [];
  consumer.subscribe('*', (e) => void delivered.push({ via: '*', id: e.id }));
  for (const type of EVENT_TYPES) consumer.subscribe(type, (e) => void delivered.push({ via: type, id: e.id }));
  const tailed: string[] = [];
  const tail = new EventTail({ redis, prefix: `${prefix}:${sub}`, from: '0-0', blockMs: 50 }, (e) => void tailed.push(e.id));
  tails.push(tail);

  const envelope = (type: string, data: unknown, extra: Record<string, unknown> = {}) => ({
    id: `bad-${Math.floor(r.next() * 1e12)}`, type, version: 1, occurred_at: '2026-11-25T10:00:00.000Z', source: 'intruder', correlation_id: 'c-1', ...extra, data,
  });
  const raw: string[][] = [];
  // Not JSON, or JSON that is not an envelope.
  for (let i = 0; i < 30; i++) raw.push(['type', 'usage.recorded', 'event', malformedJson(r)]);
  for (const text of ['', 'null', '[]', '1', '"usage.recorded"', 'true', '{}', deepJson(10_000, 'array'), 'x'.repeat(1_000_000)]) raw.push(['type', 'usage.recorded', 'event', text]);
  // Envelopes that break the envelope schema.
  const good = () => envelope('usage.recorded', SAMPLES['usage.recorded']);
  for (const bad of [
    { id: '' }, { id: 'i'.repeat(129) }, { id: 5 }, { version: 0 }, { version: 2 }, { version: '1' }, { version: 1.5 }, { occurred_at: 'yesterday' },
    { source: 's'.repeat(65) }, { correlation_id: '' }, { user_id: '' }, { type: 'unknown.type' }, { type: '__proto__' }, { type: 'constructor' },
    { type: '' }, { extra_field: 1 }, { data: undefined },
  ]) raw.push(['type', String(bad.type ?? 'usage.recorded'), 'event', JSON.stringify({ ...good(), ...bad })]);
  const { type: _t, ...noType } = good();
  raw.push(['type', 'usage.recorded', 'event', JSON.stringify(noType)]);
  raw.push(['type', 'usage.recorded', 'event', JSON.stringify(good()).replace(/^\{/, `{"__proto__":{"${MARKER}":1},`)]);
  // Every type with data its schema refuses, and with a version this build does not read.
  for (const type of EVENT_TYPES) {
    for (let i = 0; i < 8; i++) raw.push(['type', type, 'event', JSON.stringify(envelope(type, invalidData(r, type, { forConsume: true }).data))]);
    raw.push(['type', type, 'event', JSON.stringify(envelope(type, SAMPLES[type], { version: EVENT_CATALOG[type].version + 1 }))]);
  }
  // An entry that carries no event at all.
  raw.push(['type', 'usage.recorded']);
  raw.push(['type', 'usage.recorded', 'evnt', JSON.stringify(good())]);

  for (const fields of raw) await redis.xadd(consumer.stream, '*', ...fields);
  const sentinel = await publisher.publish('usage.recorded', SAMPLES['usage.recorded'], meta(1));
  const protoBefore = prototypeSnapshot();

  await consumer.start();
  await tail.start();
  // (only this group reads this stream, so the dead-letter stream's length is its count)
  await waitFor(async () => delivered.length >= 2 && (await redis.xlen(consumer.deadLetterStream)) >= raw.length && tailed.length >= 1, 10_000, 100);
  await new Promise((res) => setTimeout(res, 200)); // room for a wrong delivery to show up
  await tail.stop();
  tails.splice(tails.indexOf(tail), 1);

  // Only the one valid event reached anyone: the '*' handler and its type's handler, once each.
  expect(delivered.sort((a, b) => a.via.localeCompare(b.via))).toEqual([
    { via: '*', id: sentinel.id },
    { via: 'usage.recorded', id: sentinel.id },
  ]);
  expect(tailed).toEqual([sentinel.id]);
  expect((await consumer.history()).map((e) => e.event.id)).toEqual([sentinel.id]);

  // Every malformed entry is in the dead letters with what was written and a reason, and nothing is left pending.
  const dead = (await consumer.deadLetters(1_000)).filter((d) => d.group === 'fuzz-consumer');
  expect(dead).toHaveLength(raw.length);
  expect(dead.every((d) => d.handler === '(decode)' && d.reason.length > 0)).toBe(true);
  // (an entry with no event field is kept as its fields, so nothing of it is lost)
  const written = raw.map((f) => {
    const i = f.indexOf('event');
    return i >= 0 && i % 2 === 0 ? f[i + 1]! : JSON.stringify(f);
  });
  // (compared as the UTF-8 Redis stored: a lone surrogate in a JS string is written as U+FFFD)
  const asStored = (t: string) => Buffer.from(t, 'utf8').toString('utf8');
  expect(dead.map((d) => d.raw).sort()).toEqual(written.map(asStored).sort());
  expect(await consumer.pendingCount()).toBe(0);
  expect(prototypeSnapshot()).toEqual(protoBefore);
  expect(({} as Record<string, unknown>)[MARKER]).toBeUndefined();
}, 30_000);

test('pollution keys inside data are dropped on read: the event is delivered clean and no prototype changes', async () => {
  const sub = 'pollution';
  const consumer = makeBus('fuzz-consumer', sub);
  const got: AnyEvent[] = [];
  consumer.subscribe('usage.recorded', (e) => void got.push(e));
  const env = {
    id: 'ev-pollution', type: 'usage.recorded', version: 1, occurred_at: '2026-11-25T10:00:00.000Z', source: 'other-build', correlation_id: 'c-1',
    data: SAMPLES['usage.recorded'],
  };
  // A newer (or hostile) producer's extra data keys, written as JSON text so they are own properties.
  const text = JSON.stringify(env).replace('"data":{', `"data":{"__proto__":{"${MARKER}":1},"constructor":{"prototype":{"${MARKER}":1}},`);
  await redis.xadd(consumer.stream, '*', 'type', 'usage.recorded', 'event', text);
  const protoBefore = prototypeSnapshot();
  await consumer.start();
  expect(await waitFor(() => got.length === 1, 5_000)).toBe(true);
  const data = got[0]!.data as Record<string, unknown>;
  expect(Object.keys(data).sort()).toEqual(Object.keys(SAMPLES['usage.recorded']).sort());
  expect(Object.getPrototypeOf(data)).toBe(Object.prototype);
  expect(data[MARKER]).toBeUndefined();
  expect(prototypeSnapshot()).toEqual(protoBefore);
});
