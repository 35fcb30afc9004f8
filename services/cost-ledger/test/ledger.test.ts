import {
  EventBus,
  type EventBusOptions,
  type EventMeta,
  LedgerReader,
  ledgerKeys,
  ledgerKeysOf,
  loadPriceTable,
  periodKeys,
  price,
  type UsageUnits,
} from '@tollgate/shared';
import { testRedis, waitFor } from '@tollgate/shared/src/testing';
import { consumeUsage } from '../src/ledger-consumer';
import { LedgerWriter } from '../src/ledger-writer';
import { toEntry, type UsageEvent } from '../src/usage-pricing';

const { redis, prefix, cleanup } = testRedis('ledger');
const table = loadPriceTable();
const buses: EventBus[] = [];
let n = 0;

afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});
afterAll(cleanup);

/** A ledger instance as the service wires it, under a test namespace. */
function ledgerInstance(ns: string, consumer: string, extra: Partial<EventBusOptions> = {}): EventBus {
  const bus = new EventBus({ redis, prefix: ns, service: 'cost-ledger', consumer, blockMs: 50, concurrency: 128, batchSize: 200, maxLen: 100_000, ...extra });
  consumeUsage(bus, new LedgerWriter(redis, ns), table);
  buses.push(bus);
  return bus;
}

const MODELS: Array<[string, string, (i: number) => UsageUnits]> = [
  ['openai', 'gpt-4o-mini', (i) => ({ input_tokens: 100 + i, cached_input_tokens: i % 50, output_tokens: 20 + (i % 300) })],
  ['gemini', 'gemini-2.0-flash', (i) => ({ input_tokens: 1_000 + i, output_tokens: 333 + (i % 97), reasoning_tokens: i % 7 })],
  ['deepseek', 'deepseek-chat', (i) => ({ input_tokens: 77 * (i % 13), cached_input_tokens: 0, output_tokens: 5 + (i % 11) })],
  ['deepseek', 'deepseek-vl2', () => ({ images: 1 })],
  ['gemini', 'gemini-2.0-flash', () => ({ images: 1 })],
];

function usageItem(i: number, occurredAt = '2026-11-20T12:00:00.000Z') {
  const [provider, model, units] = MODELS[i % MODELS.length]!;
  const meta: EventMeta = {
    id: `usage-${i}`,
    correlation_id: `req-${i}`,
    user_id: `user-${i % 7}`,
    project_id: `proj-${i % 3}`,
    occurred_at: occurredAt,
  };
  return {
    type: 'usage.recorded' as const,
    data: {
      provider,
      model,
      service: units(i).images ? 'vision' : 'chat-workflow',
      operation: units(i).images ? 'vision' : 'chat',
      units: units(i),
      usage_source: 'provider' as const,
      request_id: `req-${i}`,
      cached: false,
    },
    meta,
  };
}

type Item = ReturnType<typeof usageItem>;
const costOf = (it: Item) => price({ provider: it.data.provider, model: it.data.model, units: it.data.units }, { table }).amount_micros;

async function publishAll(publisher: EventBus, items: Item[]): Promise<void> {
  for (let i = 0; i < items.length; i += 500) await publisher.publishMany(items.slice(i, i + 500));
}

async function hash(key: string): Promise<Record<string, number>> {
  return Object.fromEntries(Object.entries(await redis.hgetall(key)).map(([k, v]) => [k, Number(v)]));
}

/** Sums the expected aggregate fields straight from the items: what the ledger must equal. */
function expectedDay(items: Item[]): Record<string, number> {
  const out: Record<string, number> = { total: 0, count: 0 };
  const add = (f: string, v: number) => (out[f] = (out[f] ?? 0) + v);
  for (const it of items) {
    const c = costOf(it);
    add('total', c);
    add('count', 1);
    add(`service:${it.data.service}`, c);
    add(`operation:${it.data.operation}`, c);
    add(`provider:${it.data.provider}`, c);
    add(`model:${it.data.provider}/${it.data.model}`, c);
    add(`user:${it.meta.user_id}`, c);
    add(`project:${it.meta.project_id}`, c);
  }
  return out;
}

test('10,000 events plus 2,000 redelivered, two instances at once: 10,000 entries and every aggregate exact', async () => {
  const ns = `${prefix}:exact${n++}`;
  const a = ledgerInstance(ns, 'a');
  const b = ledgerInstance(ns, 'b');
  await Promise.all([a.start(), b.start()]);
  const publisher = new EventBus({ redis, prefix: ns, service: 'chat-workflow', maxLen: 100_000 });

  const items = Array.from({ length: 10_000 }, (_, i) => usageItem(i));
  // The same envelopes again (same event ids), as a redelivering or replaying producer would send them.
  const again = items.filter((_, i) => i % 5 === 0);
  await publishAll(publisher, [...items, ...again]);

  const k = ledgerKeys(ns);
  const reader = new LedgerReader(redis, ns);
  // Done when every delivery, redeliveries included, has produced its cost.recorded.
  expect(await waitFor(async () => (await redis.xlen(publisher.stream)) === 24_000 && (await a.pendingCount()) === 0, 60_000, 100)).toBe(true);
  expect(await reader.count()).toBe(10_000);

  const day = periodKeys('2026-11-20T12:00:00.000Z');
  const want = expectedDay(items);
  // The day's detail, summed over the tenant shards, and its running totals under the namespace's tag.
  const got = Object.fromEntries(await reader.fields('day', day.day));
  for (const [field, value] of Object.entries(want)) expect([field, got[field]]).toEqual([field, value]);
  const running = await hash(k.day(day.day));
  expect(running.total).toBe(want.total);
  for (let p = 0; p < 3; p++) expect(running[`project:proj-${p}`]).toBe(want[`project:proj-${p}`]);
  // Week and month running totals carry the same money.
  expect((await hash(k.running('week', day.week))).total).toBe(want.total);
  expect((await hash(k.running('month', day.month))).total).toBe(want.total);
  for (let u = 0; u < 7; u++) expect((await hash(k.running('month', day.month)))[`user:user-${u}`]).toBe(want[`user:user-${u}`]);
  // Each user's and project's day carries the same detail for its own entries, and the other cut:
  // a user's spend by project, a project's by user (what a budget alert names as top contributors).
  type Cut = [scope: { user: string } | { project: string }, own: 'user:' | 'project:', subset: Item[]];
  const scoped: Cut[] = [
    ...Array.from({ length: 7 }, (_, u): Cut => [{ user: `user-${u}` }, 'user:', items.filter((it) => it.meta.user_id === `user-${u}`)]),
    ...Array.from({ length: 3 }, (_, p): Cut => [{ project: `proj-${p}` }, 'project:', items.filter((it) => it.meta.project_id === `proj-${p}`)]),
  ];
  for (const [scope, own, subset] of scoped) {
    // In the project's tenant shard; a user's summed over the shards.
    const mine = Object.fromEntries(await reader.fields('day', day.day, scope));
    const expected = Object.entries(expectedDay(subset)).filter(([field]) => !field.startsWith(own));
    // 21 user/project pairs, every one of them present in the items.
    expect(expected.filter(([field]) => field.startsWith(own === 'user:' ? 'project:' : 'user:')).length).toBe(own === 'user:' ? 3 : 7);
    for (const [field, value] of expected) expect([scope, field, mine[field]]).toEqual([scope, field, value]);
    expect(Object.keys(mine).filter((field) => field.startsWith(own))).toEqual([]);
  }

  // And the aggregates equal the sum of the stored entries themselves.
  let sum = 0;
  let count = 0;
  let cursor: string | undefined;
  do {
    const page = await reader.entries({ limit: 1000, ...(cursor && { cursor }) });
    for (const e of page.entries) sum += e.amount_micros;
    count += page.entries.length;
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  expect(count).toBe(10_000);
  expect(sum).toBe(want.total);

  // Both instances did part of the work; one cost.recorded per delivery, same id for a redelivery.
  const costs = await publisher.history({ types: 'cost.recorded', limit: 20_000 });
  expect(new Set(costs.map((c) => c.event.id)).size).toBe(10_000);
  expect(new Set(costs.map((c) => c.event.source))).toEqual(new Set(['cost-ledger']));
}, 120_000);

test('cost.recorded carries the entry and the running totals of every scope it touched', async () => {
  const ns = `${prefix}:totals${n++}`;
  const bus = ledgerInstance(ns, 'x');
  await bus.start();
  const publisher = new EventBus({ redis, prefix: ns, service: 'chat-workflow' });
  const items = [usageItem(0), usageItem(7), usageItem(14)]; // same model and user (i % 7 == 0)
  await publishAll(publisher, items);
  expect(await waitFor(async () => (await publisher.history({ types: 'cost.recorded' })).length === 3)).toBe(true);
  const [last] = (await publisher.history({ types: 'cost.recorded', last: 1 })).map((e) => e.event);
  if (last?.type !== 'cost.recorded') throw new Error('no cost event');
  const costs = items.map(costOf);
  expect(last.data.amount_micros).toBe(costs[2]);
  expect(last.data.price_version).toBe('2026-01-01');
  const user0 = costs.reduce((s, c) => s + c, 0);
  const userTotals = last.data.totals.filter((t) => t.scope === 'user');
  expect(userTotals.map((t) => [t.period, t.scope_id, t.spent_micros])).toEqual([
    ['day', 'user-0', user0],
    ['week', 'user-0', user0],
    ['month', 'user-0', user0],
  ]);
  expect(last.data.totals.find((t) => t.scope === 'global' && t.period === 'day')).toMatchObject({ scope_id: 'all', period_key: '2026-11-20', spent_micros: user0 });
  expect(last.id).toBe(`cost-usage-14`);
});

test('a ledger instance that dies mid-stream loses nothing: the survivor reclaims and the totals are exact', async () => {
  const ns = `${prefix}:crash${n++}`;
  const survivor = ledgerInstance(ns, 'survivor', { claimIdleMs: 300, claimIntervalMs: 100 });
  await survivor.start();
  await survivor.stop(); // group exists; the victim reads next
  const publisher = new EventBus({ redis, prefix: ns, service: 'chat-workflow' });
  const items = Array.from({ length: 600 }, (_, i) => usageItem(i));
  await publishAll(publisher, items);
  // The victim takes 250 events and dies before acking any (what SIGKILL leaves behind).
  await redis.xreadgroup('GROUP', 'cost-ledger', 'victim', 'COUNT', 250, 'STREAMS', publisher.stream, '>');

  const back = ledgerInstance(ns, 'survivor', { claimIdleMs: 300, claimIntervalMs: 100 });
  await back.start();
  const k = ledgerKeys(ns);
  const reader = new LedgerReader(redis, ns);
  expect(await waitFor(async () => (await reader.count()) === 600 && (await back.pendingCount()) === 0, 20_000, 50)).toBe(true);
  expect((await hash(k.day('2026-11-20'))).total).toBe(expectedDay(items).total);
});

test('period boundaries: the last millisecond of a day, ISO weeks across the year end, month ends', async () => {
  const ns = `${prefix}:periods${n++}`;
  const bus = ledgerInstance(ns, 'p');
  await bus.start();
  const publisher = new EventBus({ redis, prefix: ns, service: 'chat-workflow' });
  const at = ['2026-12-31T23:59:59.999Z', '2027-01-01T00:00:00.000Z', '2027-01-04T00:00:00.000Z', '2026-11-30T23:59:59.999Z', '2026-12-01T00:00:00.000Z'];
  const items = at.map((t, i) => usageItem(i * 5, t)); // all gpt-4o-mini, different sizes
  await publishAll(publisher, items);
  const k = ledgerKeys(ns);
  const reader = new LedgerReader(redis, ns);
  expect(await waitFor(async () => (await reader.appliedCount()) === 5)).toBe(true);
  const c = items.map(costOf);
  const total = async (key: string) => (await hash(key)).total ?? 0;
  expect(await total(k.day('2026-12-31'))).toBe(c[0]);
  expect(await total(k.day('2027-01-01'))).toBe(c[1]);
  // 2026-12-31 (Thursday) and 2027-01-01 (Friday) share ISO week 2026-W53; Monday 2027-01-04 starts 2027-W01.
  expect(await total(k.running('week', '2026-W53'))).toBe(c[0]! + c[1]!);
  expect(await total(k.running('week', '2027-W01'))).toBe(c[2]);
  expect(await total(k.running('month', '2026-12'))).toBe(c[0]! + c[4]!);
  expect(await total(k.running('month', '2027-01'))).toBe(c[1]! + c[2]!);
  expect(await total(k.running('month', '2026-11'))).toBe(c[3]);
  // The reader sums days for week and month detail and agrees with the running totals.
  const week = await reader.summary({ period: 'week', at: new Date('2026-12-31T10:00:00Z'), groupBy: 'model' });
  expect(week).toMatchObject({ period_key: '2026-W53', entries: 2, total: { micros: c[0]! + c[1]! } });
  expect(week.groups).toEqual([{ key: 'openai/gpt-4o-mini', micros: c[0]! + c[1]!, usd: week.total.usd }]);
});

test('an unknown model is dead-lettered with a clear reason and never priced as zero', async () => {
  const ns = `${prefix}:unknown${n++}`;
  const bus = ledgerInstance(ns, 'u', { handlerAttempts: 3 });
  await bus.start();
  const publisher = new EventBus({ redis, prefix: ns, service: 'chat-workflow' });
  const bad = usageItem(0);
  bad.data.model = 'gpt-99-ultra';
  await publisher.publishMany([bad]);
  expect(await waitFor(async () => (await bus.deadLetters()).length === 1)).toBe(true);
  const [dead] = await bus.deadLetters();
  expect(dead!.group).toBe('cost-ledger');
  expect(dead!.reason).toMatch(/gpt-99-ultra/);
  expect(dead!.attempts).toBe(1); // permanent: not retried
  expect(await new LedgerReader(redis, ns).count()).toBe(0);
  expect(await redis.exists(ledgerKeys(ns).day('2026-11-20'))).toBe(0);
});

test('a cache hit costs zero and records what it saved', async () => {
  const ns = `${prefix}:cached${n++}`;
  const bus = ledgerInstance(ns, 'c');
  await bus.start();
  const publisher = new EventBus({ redis, prefix: ns, service: 'vision' });
  const hit = usageItem(4); // gemini image
  hit.data.cached = true;
  await publisher.publishMany([hit]);
  const k = ledgerKeys(ns);
  expect(await waitFor(async () => (await new LedgerReader(redis, ns).count()) === 1)).toBe(true);
  expect(Object.fromEntries(await new LedgerReader(redis, ns).fields('day', '2026-11-20'))).toMatchObject({ total: 0, count: 1, avoided: 250_000 });
  const [entry] = (await new LedgerReader(redis, ns).entries({})).entries;
  expect(entry).toMatchObject({ amount_micros: 0, avoided_micros: 250_000, cached: true, provider: 'gemini' });
});


test('the same entry twice in one batch is stored and aggregated once; the repeat is reported as a duplicate', async () => {
  const ns = `${prefix}:samebatch${n++}`;
  const writer = new LedgerWriter(redis, ns);
  const items = [usageItem(0), usageItem(1), usageItem(2)];
  const entries = items.map((it) => toEntry({ ...it.meta, type: it.type, data: it.data, source: 'chat-workflow' } as UsageEvent, table));
  // One tick: the writer batches all five into one script call, the first entry three times.
  const results = await Promise.all([entries[0]!, entries[1]!, entries[0]!, entries[2]!, entries[0]!].map((e) => writer.write(e)));
  expect(results.map((r) => r.created)).toEqual([true, true, false, true, false]);
  const k = ledgerKeys(ns);
  const want = expectedDay(items);
  expect(Object.fromEntries(await new LedgerReader(redis, ns).fields('day', '2026-11-20'))).toMatchObject({ total: want.total, count: 3 });
  expect(await new LedgerReader(redis, ns).count()).toBe(3);
  // The repeats report the totals as they stand, with the first entry counted once.
  const dayTotal = (r: (typeof results)[number]) => r.totals.find((t) => t.scope === 'global' && t.period === 'day')!.spent_micros;
  expect(dayTotal(results[4]!)).toBe(want.total);
});

test('a write that stops between its two steps heals on redelivery: totals applied once, the pending mark cleared', async () => {
  const ns = `${prefix}:steps${n++}`;
  const writer = new LedgerWriter(redis, ns);
  const reader = new LedgerReader(redis, ns);
  const [a, b] = [usageItem(0), usageItem(1)].map((it) => toEntry({ ...it.meta, type: it.type, data: it.data, source: 'chat-workflow' } as UsageEvent, table));
  const k = ledgerKeys(ns);
  const today = new Date().toISOString().slice(0, 10);
  const dayTotal = async () => (await hash(k.day('2026-11-20'))).total ?? 0;
  const pending = (entry: typeof a) => redis.sismember(ledgerKeysOf(ns, entry!.project_id).pending, entry!.entry_id);

  // Step 2 fails (its applied set is not a set): the entry is written in its shard, pending, and
  // counted nowhere else.
  await redis.set(k.applied(today), 'not a set');
  await expect(writer.write(a!)).rejects.toThrow(/WRONGTYPE/);
  expect(await reader.count()).toBe(1);
  expect(await pending(a)).toBe(1);
  expect(await dayTotal()).toBe(0);
  expect(await redis.hget(k.running('month', '2026-11'), 'total')).toBeNull();
  await redis.del(k.applied(today));

  // The redelivery finds it pending and applies its totals, once; the next finds it whole.
  const healed = await writer.write(a!);
  expect(healed.created).toBe(true);
  expect(healed.totals.find((t) => t.scope === 'global' && t.period === 'month')!.spent_micros).toBe(a!.amount_micros);
  expect(await pending(a)).toBe(0);
  expect((await writer.write(a!)).created).toBe(false);
  expect(await dayTotal()).toBe(a!.amount_micros);

  // Stopped after step 2, before the pending mark was cleared: the redelivery applies nothing again.
  await writer.write(b!);
  await redis.sadd(ledgerKeysOf(ns, b!.project_id).pending, b!.entry_id);
  const again = await writer.write(b!);
  expect(again.created).toBe(false);
  expect(await pending(b)).toBe(0);
  expect(await dayTotal()).toBe(a!.amount_micros + b!.amount_micros);
  expect(Number(await redis.hget(k.running('month', '2026-11'), 'total'))).toBe(a!.amount_micros + b!.amount_micros);
  expect(await reader.count()).toBe(2);

  // The same, healed the next UTC day: yesterday's applied set still knows it.
  const c = toEntry({ ...usageItem(2).meta, type: usageItem(2).type, data: usageItem(2).data, source: 'chat-workflow' } as UsageEvent, table);
  await writer.write(c);
  await redis.sadd(ledgerKeysOf(ns, c.project_id).pending, c.entry_id);
  const tomorrow = new LedgerWriter(redis, ns, 500, undefined, () => Date.now() + 86_400_000);
  expect((await tomorrow.write(c)).created).toBe(false);
  expect(await pending(c)).toBe(0);
  expect(await dayTotal()).toBe(a!.amount_micros + b!.amount_micros + c.amount_micros);
});
