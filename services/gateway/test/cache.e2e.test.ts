import OpenAI from 'openai';
import type { EventEnvelope, LedgerEntry } from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { startFullSystem, type FullSystem } from './full-harness';
import { post } from './harness';

/**
 * Grounded chat and the caching service on the whole system: the chat worker grounds through
 * @google/genai against the stub's googleSearch wire, the gateway serves cached answers, and the
 * ledger (real cost-ledger consumer) records what was paid and what was saved.
 */

let sys: FullSystem;
const keys: Record<'alice' | 'bob' | 'carol' | 'dave', string> = { alice: '', bob: '', carol: '', dave: '' };

beforeAll(async () => {
  sys = await startFullSystem('gw-cache');
  // alice and bob share a project, carol has her own; dave's project has a 1 s RAG TTL.
  keys.alice = (await sys.keys.create({ name: 'a', user_id: 'alice', project_id: 'web', scopes: ['chat', 'costs'] })).key;
  keys.bob = (await sys.keys.create({ name: 'b', user_id: 'bob', project_id: 'web', scopes: ['chat'] })).key;
  keys.carol = (await sys.keys.create({ name: 'c', user_id: 'carol', project_id: 'mobile', scopes: ['chat'] })).key;
  keys.dave = (await sys.keys.create({ name: 'd', user_id: 'dave', project_id: 'short-ttl', scopes: ['chat'] })).key;
});
afterAll(async () => {
  await sys.close();
});

const as = (who: keyof typeof keys, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${keys[who]}`, ...extra });
const admin = () => ({ authorization: `Bearer ${sys.adminToken}` });
let n = 0;
const rid = (label: string) => `${label}-${++n}-${Date.now()}`;

async function entriesFor(requestId: string, count = 1): Promise<LedgerEntry[]> {
  let found: LedgerEntry[] = [];
  await waitFor(async () => {
    found = (await sys.reader.entries({ limit: 1000 })).entries.filter((e) => e.request_id === requestId);
    return found.length >= count;
  }, 10_000);
  return found;
}

async function events(requestId: string, type: string): Promise<EventEnvelope[]> {
  const raw = await sys.redis.xrange(sys.busStream, '-', '+');
  return raw
    .map(([, fields]) => JSON.parse(fields[fields.indexOf('event') + 1] ?? fields[1] ?? 'null') as EventEnvelope)
    .filter((e) => e && e.correlation_id === requestId && e.type === type);
}

const searches = () => sys.stub.stats().totals.billed.searchQueries;
const geminiCalls = () => sys.stub.stats().totals.successes;

test('a grounded chat answers with sources and the search-entry-point HTML; its ledger entry carries the search fee', async () => {
  const id = rid('grounded');
  const before = searches();
  const res = await post(sys, '/v1/chat', { message: 'What changed in the 2026 tax rules?', grounding: true }, as('alice', { 'x-request-id': id }));
  expect(res.status).toBe(200);
  expect(res.json.grounding.sources).toHaveLength(3);
  for (const s of res.json.grounding.sources) expect(s).toEqual({ title: expect.stringMatching(/\.example\.com$/), uri: expect.stringMatching(/^https:\/\//) });
  expect(res.json.grounding.search_entry_point.rendered_content).toContain('class="chip"');
  expect(res.json.grounding).toMatchObject({ cached: false, queries: ['What changed in the 2026 tax rules?', 'What changed in the 2026 tax rules? explained'], search_fee: { micros: 35_000 } });
  expect(searches() - before).toBe(2);

  const [rag] = await events(id, 'rag.context_retrieved');
  expect(rag?.data).toMatchObject({ source: 'google_search', documents: 3, cached: false, search_micros: 35_000, queries: res.json.grounding.queries });
  expect((rag?.data as { sources: unknown[] }).sources).toEqual(res.json.grounding.sources);

  // Two entries: the retrieval (Gemini 2.x: one grounded prompt, $0.035 on top of its tokens) and the answer.
  const entries = await entriesFor(id, 2);
  const retrieval = entries.find((e) => e.operation === 'rag')!;
  expect(retrieval).toMatchObject({ provider: 'gemini', model: 'gemini-2.0-flash', cached: false, search_micros: 35_000, units: { grounded_prompts: 1, search_queries: 2 } });
  expect(retrieval.amount_micros).toBeGreaterThan(35_000);
  expect(retrieval.amount_micros).toBe(res.json.grounding.cost.micros);
  expect(entries.find((e) => e.operation === 'chat')?.search_micros).toBeUndefined();
});

test('the same grounded question within the RAG TTL reuses the context: no second search fee, cached on the event; another user searches again', async () => {
  const message = 'Latest results of the city marathon?';
  const first = await post(sys, '/v1/chat', { message, grounding: true }, as('alice', { 'x-request-id': rid('rag-1') }));
  const before = searches();
  const id = rid('rag-2');
  const again = await post(sys, '/v1/chat', { message, grounding: true }, as('alice', { 'x-request-id': id }));
  expect(again.status).toBe(200);
  expect(searches()).toBe(before);
  expect(again.json.grounding).toMatchObject({ cached: true, cost: { micros: 0 }, search_fee: { micros: 0 }, saved: { micros: first.json.grounding.cost.micros } });
  expect(again.json.grounding.sources).toEqual(first.json.grounding.sources);
  const [rag] = await events(id, 'rag.context_retrieved');
  expect(rag?.data).toMatchObject({ cached: true, cost_micros: 0, avoided_micros: first.json.grounding.cost.micros });
  const retrieval = (await entriesFor(id, 2)).find((e) => e.operation === 'rag')!;
  expect(retrieval).toMatchObject({ amount_micros: 0, cached: true, avoided_micros: first.json.grounding.cost.micros, reused_request_id: first.json.request_id });

  // Same project, other user: tenants never share a context.
  const bob = await post(sys, '/v1/chat', { message, grounding: true }, as('bob'));
  expect(bob.json.grounding.cached).toBe(false);
  expect(searches()).toBe(before + 2);
});

test('after the RAG TTL the question is searched again', async () => {
  const put = await fetch(`${sys.url}/v1/cache/settings/short-ttl`, { method: 'PUT', headers: { ...admin(), 'content-type': 'application/json' }, body: JSON.stringify({ rag_ttl_seconds: 1 }) });
  expect(put.status).toBe(200);
  const message = 'Weather warnings for the coast today?';
  await post(sys, '/v1/chat', { message, grounding: true }, as('dave'));
  const hit = await post(sys, '/v1/chat', { message, grounding: true }, as('dave'));
  expect(hit.json.grounding.cached).toBe(true);
  await new Promise((r) => setTimeout(r, 1_200));
  const before = searches();
  const later = await post(sys, '/v1/chat', { message, grounding: true }, as('dave'));
  expect(later.json.grounding.cached).toBe(false);
  expect(searches()).toBe(before + 2);
});

test('Cache-Control: no-store bypasses the context and the answer cache', async () => {
  const message = 'Who leads the league table?';
  await post(sys, '/v1/chat', { message, grounding: true }, as('alice', { 'cache-control': 'max-age=600' }));
  const before = searches();
  const res = await post(sys, '/v1/chat', { message, grounding: true }, as('alice', { 'cache-control': 'no-store' }));
  expect(res.headers.get('x-tollgate-cache')).toBe('BYPASS');
  expect(res.json.grounding.cached).toBe(false);
  expect(searches()).toBe(before + 2);
});

test('Gemini 3 bills grounding per query; a grounded call that ran no search pays no search fee', async () => {
  const g3 = await post(sys, '/v1/chat', { message: 'Open source licences compared', grounding: { model: 'gemini-3-flash-preview' } }, as('carol'));
  expect(g3.status).toBe(200);
  expect(g3.json.grounding).toMatchObject({ retrieved_by: { model: 'gemini-3-flash-preview' }, search_fee: { micros: 2 * 14_000 } });

  const id = rid('no-search');
  const none = await post(sys, '/v1/chat', { message: 'Thanks, that is all [no-search]', grounding: true }, as('carol', { 'x-request-id': id }));
  expect(none.json.grounding).toMatchObject({ queries: [], sources: [], search_entry_point: null, search_fee: { micros: 0 } });
  const retrieval = (await entriesFor(id, 2)).find((e) => e.operation === 'rag')!;
  expect(retrieval.units).toMatchObject({ grounded_prompts: 0, search_queries: 0 });
  expect(retrieval.search_micros).toBeUndefined();
  expect(retrieval.amount_micros).toBeLessThan(1_000);

  const bad = await post(sys, '/v1/chat', { message: 'x', grounding: { model: 'gemini-9-ultra' } }, as('carol'));
  expect(bad.status).toBe(400);
  expect(bad.json.error.code).toBe('invalid_request');
});

test('a chat answer is cached only when asked; a hit is free in the ledger, names the request it reused and is served without the queue', async () => {
  const message = 'Explain idempotency keys briefly.';
  const off = await post(sys, '/v1/chat', { message }, as('alice'));
  expect(off.headers.get('x-tollgate-cache')).toBe('BYPASS');

  const first = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600', 'x-request-id': rid('ans-1') }));
  expect(first.headers.get('x-tollgate-cache')).toBe('MISS');
  const jobs = (await sys.jobCounts()).chat;
  const calls = geminiCalls();
  const id = rid('ans-2');
  const hit = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600', 'x-request-id': id }));
  expect(hit.status).toBe(200);
  expect(hit.headers.get('x-tollgate-cache')).toBe('HIT');
  expect(hit.headers.get('x-tollgate-cache-saved-micros')).toBe(String(first.json.cost.micros));
  expect(hit.json).toMatchObject({ reply: first.json.reply, cost: { micros: 0 }, cache: { status: 'HIT', reused_request_id: first.json.request_id, saved: { micros: first.json.cost.micros } } });
  expect((await sys.jobCounts()).chat).toBe(jobs);
  expect(geminiCalls()).toBe(calls);
  const [entry] = await entriesFor(id);
  expect(entry).toMatchObject({ amount_micros: 0, avoided_micros: first.json.cost.micros, cached: true, usage_source: 'cache', service: 'gateway', reused_request_id: first.json.request_id, user_id: 'alice', project_id: 'web' });

  // Identical request, other tenant: a MISS, never alice's entry.
  const carol = await post(sys, '/v1/chat', { message }, as('carol', { 'cache-control': 'max-age=600' }));
  expect(carol.headers.get('x-tollgate-cache')).toBe('MISS');
  // no-cache refreshes: paid again and stored again.
  const refresh = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'no-cache, max-age=600' }));
  expect(refresh.headers.get('x-tollgate-cache')).toBe('REFRESH');
  expect(refresh.json.cost.micros).toBeGreaterThan(0);
  // Partitions are separate.
  const other = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600', 'x-tollgate-cache-namespace': 'experiment-b' }));
  expect(other.headers.get('x-tollgate-cache')).toBe('MISS');
  const badNs = await post(sys, '/v1/chat', { message }, as('alice', { 'x-tollgate-cache-namespace': 'no spaces allowed' }));
  expect(badNs.status).toBe(400);
});

test('a failed provider call is never cached', async () => {
  const message = 'Summarise the outage report.';
  sys.stub.setFaults({ rate503: 1 });
  try {
    const failed = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600' }));
    expect(failed.status).toBeGreaterThanOrEqual(500);
  } finally {
    sys.stub.setFaults({});
  }
  const next = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600' }));
  expect(next.status).toBe(200);
  expect(next.headers.get('x-tollgate-cache')).toBe('MISS');
  expect(next.json.cost.micros).toBeGreaterThan(0);
});

test('identical requests in flight together pay once', async () => {
  const calls = geminiCalls();
  const message = `Concurrent identical question ${Date.now()}`;
  const all = await Promise.all(Array.from({ length: 5 }, () => post(sys, '/v1/chat', { message }, as('bob', { 'cache-control': 'max-age=600' }))));
  expect(all.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  expect(geminiCalls() - calls).toBe(1);
  expect(all.map((r) => r.headers.get('x-tollgate-cache')).sort()).toEqual(['HIT', 'HIT', 'HIT', 'HIT', 'MISS']);
  expect(new Set(all.map((r) => r.json.reply)).size).toBe(1);
});

test('the OpenAI SDK: web_search_options grounds, and a streamed request is served from the cache as SSE with usage', async () => {
  const client = new OpenAI({ apiKey: keys.carol, baseURL: `${sys.url}/v1`, maxRetries: 0, defaultHeaders: { 'cache-control': 'max-age=600' } });
  const messages = [{ role: 'user' as const, content: 'Current exchange rate trends?' }];
  const grounded = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, web_search_options: {} });
  const extras = (grounded as unknown as { tollgate: { grounding: { sources: unknown[]; search_entry_point: { rendered_content: string } }; cache: { status: string } } }).tollgate;
  expect(extras.grounding.sources).toHaveLength(3);
  expect(extras.grounding.search_entry_point.rendered_content).toContain('chip');
  expect(extras.cache.status).toBe('MISS');

  const plain = [{ role: 'user' as const, content: 'Stream me a cached answer.' }];
  const paid = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: plain });
  const calls = geminiCalls();
  const { data: stream, response } = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: plain, stream: true, stream_options: { include_usage: true } }).withResponse();
  expect(response.headers.get('x-tollgate-cache')).toBe('HIT');
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  let text = '';
  let usage: OpenAI.CompletionUsage | undefined;
  let deltas = 0;
  let finish: string | null | undefined;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (c?.delta.content) {
      text += c.delta.content;
      deltas++;
    }
    if (c?.finish_reason) finish = c.finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  expect(text).toBe(paid.choices[0]!.message.content);
  expect(deltas).toBeGreaterThan(1);
  expect(finish).toBe('stop');
  expect(usage).toEqual(paid.usage);
  expect(geminiCalls()).toBe(calls);
});

test('cache stats and purge: a key sees its own project; purge removes a project and nothing else', async () => {
  const stats = await fetch(`${sys.url}/v1/cache/stats`, { headers: as('alice') });
  const body = (await stats.json()) as { scope: unknown; hits: number; saved: { micros: number }; kinds: Array<{ kind: string; hits: number }> };
  expect(body.scope).toEqual({ project_id: 'web' });
  expect(body.hits).toBeGreaterThan(0);
  expect(body.saved.micros).toBeGreaterThan(0);
  expect((await fetch(`${sys.url}/v1/cache/stats?project_id=mobile`, { headers: as('alice') })).status).toBe(403);

  const message = 'Purge me.';
  await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600' }));
  await post(sys, '/v1/chat', { message }, as('carol', { 'cache-control': 'max-age=600' }));
  expect((await fetch(`${sys.url}/v1/cache?project_id=web`, { method: 'DELETE', headers: as('alice') })).status).toBe(403);
  const purge = await fetch(`${sys.url}/v1/cache?project_id=web`, { method: 'DELETE', headers: admin() });
  expect(((await purge.json()) as { purged_keys: number }).purged_keys).toBeGreaterThan(0);
  const alice = await post(sys, '/v1/chat', { message }, as('alice', { 'cache-control': 'max-age=600' }));
  expect(alice.headers.get('x-tollgate-cache')).toBe('MISS');
  const carol = await post(sys, '/v1/chat', { message }, as('carol', { 'cache-control': 'max-age=600' }));
  expect(carol.headers.get('x-tollgate-cache')).toBe('HIT');
});

test('requests the answer cache covers are not counted as repeats a cache would absorb', async () => {
  const cachedId = rid('fp-cached');
  await post(sys, '/v1/chat', { message: 'fingerprint check' }, as('bob', { 'cache-control': 'no-cache, max-age=60', 'x-request-id': cachedId }));
  const plainId = rid('fp-plain');
  await post(sys, '/v1/chat', { message: 'fingerprint check' }, as('bob', { 'x-request-id': plainId }));
  const [cachedUsage] = await events(cachedId, 'usage.recorded');
  const [plainUsage] = await events(plainId, 'usage.recorded');
  expect((cachedUsage?.data as { request_fingerprint?: string }).request_fingerprint).toBeUndefined();
  expect((plainUsage?.data as { request_fingerprint?: string }).request_fingerprint).toMatch(/^[a-f0-9]{64}$/);
});
