import type { EventBus, JourneyStore, LedgerEntry } from '@tollgate/shared';
import { EXAMPLE_TEMPLATES, LedgerReader, ledgerShards } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { png1x1 } from '@tollgate/vision/test/images';
import { type FullSystem, startFullSystem } from './full-harness';
import { type JourneyService, startJourneyService } from './journey-service';

/**
 * Journeys end to end: the whole system plus the journey service (its consumer group and the
 * abandonment scheduler), driven through the HTTP API with `x-tollgate-journey`.
 */

let sys: FullSystem;
let journeys: JourneyService;
let store: JourneyStore;
let journeyBus: EventBus;
let alice: string;
let mallory: string;

beforeAll(async () => {
  sys = await startFullSystem('journeys');
  // Sweep every 200 ms, so a template with a one-second window is abandoned within seconds.
  journeys = await startJourneyService(sys, 200);
  ({ store, bus: journeyBus } = journeys);
  alice = (await sys.keys.create({ name: 'alice', user_id: 'alice', project_id: 'web', scopes: ['chat', 'vision', 'costs'] })).key;
  mallory = (await sys.keys.create({ name: 'mallory', user_id: 'mallory', project_id: 'other', scopes: ['chat', 'vision', 'costs'] })).key;
}, 60_000);

afterAll(async () => {
  await journeys?.close();
  await sys?.close();
});

/* eslint-disable @typescript-eslint/no-explicit-any */
async function call(method: string, path: string, key: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${sys.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json };
}

const journeyHeaders = (id: string, step?: string) => ({ 'x-tollgate-journey': id, ...(step && { 'x-tollgate-journey-step': step }) });
const chat = (key: string, id: string, message: string, step?: string) => call('POST', '/v1/chat', key, { message, model: 'gpt-4o-mini' }, journeyHeaders(id, step));
const vision = (key: string, id: string) => call('POST', '/v1/vision', key, { image_base64: png1x1([200, 180, 150]).toString('base64'), prompt: 'What room is this?' }, journeyHeaders(id));
const view = async (id: string) => (await call('GET', `/v1/journeys/${id}`, alice)).json;

async function ledgerEntriesOf(requestIds: string[]): Promise<LedgerEntry[]> {
  const { entries } = await new LedgerReader(sys.redis, sys.namespace).entries({ scope: { user: 'alice' }, limit: 1_000 });
  return entries.filter((e) => requestIds.includes(e.request_id));
}

test('a kitchen-renovation journey through the gateway (chat, vision, chat) moves through its steps in order; progress and per-step cost match the ledger', async () => {
  const started = await call('POST', '/v1/journeys', alice, { template: 'kitchen-renovation', external_id: 'order-17' });
  expect(started.status).toBe(201);
  const id = started.json.id as string;
  expect([started.json.state, started.json.template_version, started.json.progress_pct, started.json.steps.map((s: any) => s.key)]).toEqual([
    'active', 1, 0, ['brief', 'photos', 'plan', 'materials'],
  ]);

  const statusOf = async () => Object.fromEntries(((await view(id)).steps as any[]).map((s) => [s.key, s.status]));
  const r1 = await chat(alice, id, 'A galley kitchen, 3 by 2 metres; I want more storage.');
  expect(r1.status).toBe(200);
  expect(await waitFor(async () => (await statusOf()).brief === 'completed', 10_000)).toBe(true);
  expect((await view(id)).progress_pct).toBe(20); // brief is 1 of 5 weight
  const r2 = await vision(alice, id);
  expect(r2.status).toBe(200);
  expect(await waitFor(async () => (await statusOf()).photos === 'completed', 10_000)).toBe(true);
  expect((await view(id)).progress_pct).toBe(60);
  expect((await statusOf()).plan).toBe('pending');
  const r3 = await chat(alice, id, 'Draft the plan.');
  expect(r3.status).toBe(200);
  expect(await waitFor(async () => (await view(id)).state === 'completed', 10_000)).toBe(true);

  const requests = [r1.json.request_id, r2.json.request_id, r3.json.request_id] as string[];
  expect(await waitFor(async () => (await view(id)).cost.entries === 3, 10_000)).toBe(true);
  const v = await view(id);
  expect([v.progress_pct, v.steps.map((s: any) => s.status)]).toEqual([100, ['completed', 'completed', 'completed', 'pending']]);
  // In order: each step completed after the one before it.
  const times = v.steps.slice(0, 3).map((s: any) => Date.parse(s.completed_at));
  expect(times[0] <= times[1] && times[1] <= times[2]).toBe(true);
  const entries = await ledgerEntriesOf(requests);
  expect(entries).toHaveLength(3);
  expect(entries.every((e) => e.journey_id === id)).toBe(true);
  const costOf = (req: string) => entries.filter((e) => e.request_id === req).reduce((a, e) => a + e.amount_micros, 0);
  expect(v.steps.slice(0, 3).map((s: any) => s.cost.micros)).toEqual(requests.map(costOf));
  expect(costOf(requests[1]!)).toBe(30_000); // DeepSeek VL2 at $0.03 per image
  expect(v.cost.total.micros).toBe(entries.reduce((a, e) => a + e.amount_micros, 0));
  expect(v.cost.unassigned.micros).toBe(0);

  // The journey events are on the bus, one per transition, in order.
  const history = await journeyBus.history({ types: 'journey.*', last: 200 });
  expect(history.filter((h) => h.event.journey_id === id).map((h) => [h.event.type, (h.event.data as any).step])).toEqual([
    ['journey.started', undefined], ['journey.step_completed', 'brief'], ['journey.step_completed', 'photos'], ['journey.step_completed', 'plan'], ['journey.completed', undefined],
  ]);
  // Every event the requests caused carries the journey.
  const caused = (await journeyBus.history({ types: '*', last: 2_000 })).filter((h) => requests.includes(h.event.correlation_id));
  expect(caused.length).toBeGreaterThan(10);
  expect(caused.filter((h) => h.event.journey_id !== id).map((h) => h.event.type)).toEqual([]);

  // A closed journey takes no more requests.
  expect((await chat(alice, id, 'more')).status).toBe(409);
  // Listing: alice's own completed journeys include it; the per-version analytics count it.
  const listed = await call('GET', '/v1/journeys?state=completed', alice);
  expect(listed.json.journeys.map((j: any) => j.id)).toContain(id);
  const stats = await call('GET', '/v1/analytics/journeys/kitchen-renovation?version=1', sys.adminToken);
  expect(stats.status).toBe(200);
  expect(stats.json.completed).toBeGreaterThanOrEqual(1);
  expect(stats.json.steps.find((s: any) => s.key === 'photos').completed).toBeGreaterThanOrEqual(1);
}, 60_000);

test('a step completed twice by a replayed event counts once', async () => {
  const id = (await call('POST', '/v1/journeys', alice, { template: 'kitchen-renovation' })).json.id as string;
  const r1 = await chat(alice, id, 'brief');
  expect(await waitFor(async () => (await view(id)).steps[0].status === 'completed', 10_000)).toBe(true);
  await vision(alice, id);
  expect(await waitFor(async () => (await view(id)).steps[1].status === 'completed', 10_000)).toBe(true);
  // Republish the chat answer that completed "brief": it would also match "plan" if it counted again.
  const original = (await journeyBus.history({ types: 'chat.response_generated', last: 500 })).find((h) => h.event.correlation_id === r1.json.request_id)!;
  expect(original).toBeDefined();
  const before = await store.stats('kitchen-renovation', 1);
  // Re-added as the bus writes entries (the journey beside the type), so the journey service
  // decodes them and its state machine is what must refuse them.
  const entry = ['type', original.event.type, 'journey', id, 'event', JSON.stringify(original.event)];
  await sys.redis.xadd(sys.busStream, '*', ...entry);
  await sys.redis.xadd(sys.busStream, '*', ...entry);
  // The journey service has read past both copies.
  expect(await waitFor(async () => {
    const groups = (await sys.redis.xinfo('GROUPS', sys.busStream)) as unknown[][];
    const g = groups.map((x) => Object.fromEntries(Array.from({ length: x.length / 2 }, (_, i) => [String(x[2 * i]), x[2 * i + 1]]))).find((x) => x.name === 'journeys')!;
    return Number(g.pending) === 0 && Number(g.lag) === 0;
  }, 10_000)).toBe(true);
  const v = await view(id);
  expect([v.state, v.steps.map((s: any) => s.status)]).toEqual(['active', ['completed', 'completed', 'pending', 'pending']]);
  const after = await store.stats('kitchen-renovation', 1);
  expect(after.steps.map((s) => s.completed)).toEqual(before.steps.map((s) => s.completed));
}, 60_000);

test('chat steps answered from the answer cache complete, at zero cost, with the hit in the ledger under the step', async () => {
  await call('PUT', '/v1/journeys/templates/cached-ask', sys.adminToken, {
    title: 'Ask, then ask the same again',
    steps: [
      { key: 'ask', title: 'Ask', completion: { event: 'chat.response_generated', match: { step: 'ask' } } },
      { key: 'again', title: 'Ask again', depends_on: ['ask'], completion: { event: 'chat.response_generated', match: { step: 'again' } } },
      { key: 'more', title: 'Once more', depends_on: ['again'], completion: { event: 'chat.response_generated' } },
    ],
  });
  const id = (await call('POST', '/v1/journeys', alice, { template: 'cached-ask' })).json.id as string;
  const message = `Which hinge suits a corner cabinet? ${id}`;
  const ask = (step?: string) => call('POST', '/v1/chat', alice, { message, model: 'gpt-4o-mini' }, { ...journeyHeaders(id, step), 'cache-control': 'max-age=600' });
  const paid = await ask('ask');
  expect([paid.status, paid.json.cache.status]).toEqual([200, 'MISS']);
  expect(paid.json.cost.micros).toBeGreaterThan(0);
  expect(await waitFor(async () => (await view(id)).steps[0].status === 'completed', 10_000)).toBe(true);
  // Tagged with its step, then untagged (completed as the next open step, its cost found by request).
  const tagged = await ask('again');
  expect(await waitFor(async () => (await view(id)).steps[1].status === 'completed', 10_000)).toBe(true);
  const untagged = await ask();
  for (const hit of [tagged, untagged]) expect([hit.status, hit.json.cache.status, hit.json.cost.micros, hit.json.cache.reused_request_id]).toEqual([200, 'HIT', 0, paid.json.request_id]);
  expect(await waitFor(async () => (await view(id)).state === 'completed', 10_000)).toBe(true);

  const requests = [paid.json.request_id, tagged.json.request_id, untagged.json.request_id] as string[];
  expect(await waitFor(async () => (await view(id)).cost.entries === 3, 10_000)).toBe(true);
  const v = await view(id);
  const entries = await ledgerEntriesOf(requests);
  const entryOf = (req: string) => entries.find((e) => e.request_id === req)!;
  expect(requests.map((r) => [entryOf(r).amount_micros, entryOf(r).cached, entryOf(r).journey_id])).toEqual([
    [paid.json.cost.micros, false, id], [0, true, id], [0, true, id],
  ]);
  expect(entryOf(requests[1]!).avoided_micros).toBe(paid.json.cost.micros);
  expect(v.steps.map((s: any) => [s.key, s.status, s.cost.micros, s.entries])).toEqual([
    ['ask', 'completed', paid.json.cost.micros, 1], ['again', 'completed', 0, 1], ['more', 'completed', 0, 1],
  ]);
  expect([v.cost.total.micros, v.cost.unassigned.micros]).toEqual([paid.json.cost.micros, 0]);

  // A hit publishes the answer event, marked cached, with the journey and step, and no workflow.*
  // events: analytics counts it from its cost.recorded alone, as before.
  const caused = (await journeyBus.history({ types: '*', last: 2_000 })).filter((h) => requests.slice(1).includes(h.event.correlation_id));
  const answers = caused.filter((h) => h.event.type === 'chat.response_generated');
  expect(answers.map((h) => [h.event.correlation_id, h.event.journey_id, h.event.journey_step, (h.event.data as any).cached])).toEqual([
    [requests[1], id, 'again', true], [requests[2], id, undefined, true],
  ]);
  expect(answers.map((h) => (h.event.data as any).response_chars)).toEqual([tagged.json.reply.length, untagged.json.reply.length]);
  // A paid answer says it was not cached, so a step can ask for a fresh one (match cached: "false").
  const fresh = (await journeyBus.history({ types: 'chat.response_generated', last: 500 })).find((h) => h.event.correlation_id === requests[0])!;
  expect([fresh.event.journey_step, (fresh.event.data as any).cached]).toEqual(['ask', false]);
  expect(caused.filter((h) => h.event.type.startsWith('workflow.')).length).toBe(0);
  expect(caused.filter((h) => h.event.type === 'usage.recorded' || h.event.type === 'cost.recorded').map((h) => h.event.type).sort()).toEqual([
    'cost.recorded', 'cost.recorded', 'usage.recorded', 'usage.recorded',
  ]);
}, 30_000);

test('an idle journey is abandoned by the scheduler', async () => {
  await call('PUT', '/v1/journeys/templates/quick-idle', sys.adminToken, { title: 'Idle quickly', abandon_after_seconds: 1, steps: [{ key: 'ask', title: 'Ask', completion: { event: 'chat.response_generated' } }, { key: 'look', title: 'Look', depends_on: ['ask'], completion: { event: 'vision.analysis_completed' } }] });
  const id = (await call('POST', '/v1/journeys', alice, { template: 'quick-idle' })).json.id as string;
  expect((await chat(alice, id, 'hello')).status).toBe(200);
  expect(await waitFor(async () => (await view(id)).state === 'abandoned', 8_000, 100)).toBe(true);
  const event = (await journeyBus.history({ types: 'journey.abandoned', last: 100 })).find((h) => h.event.journey_id === id)!;
  expect([(event.event.data as any).at_step, (event.event.data as any).progress_pct]).toEqual(['look', 50]);
  const stats = await call('GET', '/v1/analytics/journeys/quick-idle', sys.adminToken);
  expect([stats.json.started, stats.json.abandoned, stats.json.steps.map((s: any) => s.abandoned_here)]).toEqual([1, 1, [0, 1]]);
  expect((await chat(alice, id, 'too late')).status).toBe(409);
}, 30_000);

test('a new template version leaves running journeys on the old one', async () => {
  await call('PUT', '/v1/journeys/templates/bath-v', sys.adminToken, EXAMPLE_TEMPLATES['bathroom-refresh']);
  const old = (await call('POST', '/v1/journeys', alice, { template: 'bath-v' })).json;
  const v2 = await call('PUT', '/v1/journeys/templates/bath-v', sys.adminToken, { title: 'Just a photo', steps: [{ key: 'photo', title: 'Photo', completion: { event: 'vision.analysis_completed' } }] });
  expect([v2.status, v2.json.template.version]).toEqual([201, 2]);
  const fresh = (await call('POST', '/v1/journeys', alice, { template: 'bath-v' })).json;
  expect([old.template_version, fresh.template_version]).toEqual([1, 2]);
  await vision(alice, old.id);
  await vision(alice, fresh.id);
  expect(await waitFor(async () => (await view(fresh.id)).state === 'completed', 10_000)).toBe(true);
  expect(await waitFor(async () => (await view(old.id)).steps[0].status === 'completed', 10_000)).toBe(true);
  const o = await view(old.id);
  expect([o.state, o.template_version, o.steps.map((s: any) => s.key)]).toEqual(['active', 1, ['photo', 'fixtures', 'shopping-list']]);
}, 30_000);

test("another tenant's journey id is refused with 403 and nothing is recorded against it", async () => {
  const id = (await call('POST', '/v1/journeys', alice, { template: 'kitchen-renovation' })).json.id as string;
  const jobsBefore = await sys.jobCounts();
  const busBefore = await sys.redis.xlen(sys.busStream);
  const c = await chat(mallory, id, 'spend on alice');
  const v = await vision(mallory, id);
  expect([c.status, c.json.error.code, v.status, v.json.error.code]).toEqual([403, 'forbidden', 403, 'forbidden']);
  expect((await call('GET', `/v1/journeys/${id}`, mallory)).status).toBe(403);
  expect((await call('POST', `/v1/journeys/${id}/cancel`, mallory)).status).toBe(403);
  // Nothing queued, published or held; alice's journey untouched.
  expect(await sys.jobCounts()).toEqual(jobsBefore);
  expect(await sys.redis.xlen(sys.busStream)).toBe(busBefore);
  // The journey's index in every tenant shard: none holds an entry.
  expect(await Promise.all(ledgerShards(sys.namespace).map((k) => sys.redis.zcard(k.index({ journey: id }))))).toEqual(ledgerShards(sys.namespace).map(() => 0));
  const mine = await view(id);
  expect([mine.state, mine.progress_pct, mine.cost.entries]).toEqual(['active', 0, 0]);
  // Unknown and malformed ids, and a step without a journey.
  expect((await chat(alice, 'jrn_doesnotexist123', 'x')).status).toBe(404);
  expect((await chat(alice, 'not-a-journey', 'x')).status).toBe(400);
  expect((await call('POST', '/v1/chat', alice, { message: 'x' }, { 'x-tollgate-journey-step': 'brief' })).status).toBe(400);
  // Its owner may cancel it; then it takes no more requests.
  const cancelled = await call('POST', `/v1/journeys/${id}/cancel`, alice);
  expect([cancelled.status, cancelled.json.state]).toEqual([200, 'cancelled']);
  expect((await chat(alice, id, 'x')).status).toBe(409);
}, 30_000);

test('a metered external call held inside a journey is billed to it', async () => {
  const usageKey = (await sys.keys.create({ name: 'alice-usage', user_id: 'alice', project_id: 'web', scopes: ['usage'] })).key;
  const id = (await call('POST', '/v1/journeys', alice, { template: 'kitchen-renovation' })).json.id as string;
  const hold = await call('POST', '/v1/usage/holds', usageKey, { operation: 'google/places-text-search', units: 0 }, journeyHeaders(id, 'brief'));
  expect(hold.status).toBe(201);
  // The report needs no header: it carries the journey its hold was asked for in.
  const report = await call('POST', '/v1/usage', usageKey, { operation: 'google/places-text-search', units: 0, hold_id: hold.json.hold_id });
  expect(report.status).toBe(202);
  expect(await waitFor(async () => (await view(id)).cost.entries === 1, 10_000)).toBe(true);
  const v = await view(id);
  expect(v.cost.total.micros).toBe(32_000);
  expect(v.steps.find((s: any) => s.key === 'brief').cost.micros).toBe(32_000);
  // Another tenant's journey is refused at the hold, before anything is held.
  const theirs = (await call('POST', '/v1/journeys', mallory, { template: 'kitchen-renovation' })).json.id as string;
  expect((await call('POST', '/v1/usage/holds', usageKey, { operation: 'google/places-text-search', units: 0 }, journeyHeaders(theirs))).status).toBe(403);
}, 30_000);
