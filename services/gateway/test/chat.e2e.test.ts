import OpenAI from 'openai';
import { waitFor } from '@tollgate/shared/src/testing';
import { post, startSystem, type System } from './harness';

let sys: System;
beforeAll(async () => {
  sys = await startSystem('gw-chat');
});
afterAll(async () => {
  await sys.close();
});

const auth = () => ({ authorization: `Bearer ${sys.apiKey}` });

test('a chat returns the stub reply and the workflow events land in order under one correlation id', async () => {
  const res = await post(sys, '/v1/chat', { message: 'What is a circuit breaker?' }, { ...auth(), 'x-request-id': 'req-chat-1' });
  expect(res.status).toBe(200);
  expect(res.headers.get('x-request-id')).toBe('req-chat-1');
  expect(res.json.reply).toMatch(/^Stub reply \(gemini\/gemini-2\.0-flash\)/);
  expect(res.json).toMatchObject({ provider: 'gemini', model: 'gemini-2.0-flash', request_id: 'req-chat-1', fallback_used: false, attempts: 1 });
  expect(res.json.usage.input_tokens).toBeGreaterThan(0);
  expect(res.json.usage.output_tokens).toBeGreaterThan(0);
  expect(res.json.usage.source).toBe('provider');
  // Gemini Flash text is $0.075 per 1M tokens, both directions, rounded half-up once.
  const tokens = res.json.usage.input_tokens + res.json.usage.output_tokens;
  expect(res.json.cost.micros).toBe(Math.round((tokens * 75_000) / 1_000_000));

  const events = await sys.bus.history({ filter: { correlation_id: 'req-chat-1' } });
  expect(events.map((e) => e.event.type)).toEqual([
    'workflow.started',
    'chat.message_received',
    'usage.recorded',
    'chat.response_generated',
    'workflow.completed',
  ]);
  expect(events.every((e) => e.event.user_id === 'user-1' && e.event.project_id === 'proj-1')).toBe(true);
  const usage = events[2]!.event;
  expect(usage.type === 'usage.recorded' && usage.data).toMatchObject({
    provider: 'gemini',
    model: 'gemini-2.0-flash',
    service: 'chat-workflow',
    operation: 'chat',
    usage_source: 'provider',
    request_id: 'req-chat-1',
    units: { input_tokens: res.json.usage.input_tokens, output_tokens: res.json.usage.output_tokens },
  });
  // What the stub billed is what was recorded.
  const billed = sys.stub.stats().byProvider.gemini['gemini-2.0-flash']!.billed;
  expect(billed.promptTokens).toBe(res.json.usage.input_tokens);
});

test('a conversation keeps its history across turns', async () => {
  const first = await post(sys, '/v1/chat', { message: 'My name is Ada.', conversation_id: 'conv-1' }, { ...auth(), 'x-request-id': 'conv-turn-1' });
  expect(first.status).toBe(200);
  const second = await post(sys, '/v1/chat', { message: 'What is my name?', conversation_id: 'conv-1' }, { ...auth(), 'x-request-id': 'conv-turn-2' });
  expect(second.status).toBe(200);
  expect(second.json.conversation_id).toBe('conv-1');
  const [received] = (await sys.bus.history({ types: 'chat.message_received', filter: { correlation_id: 'conv-turn-2' } })).map((e) => e.event);
  expect(received!.type === 'chat.message_received' && received!.data.history_messages).toBe(2);
  // The second turn sent the whole history, so it costs more input tokens than the first.
  expect(second.json.usage.input_tokens).toBeGreaterThan(first.json.usage.input_tokens);
});

test('the stock openai SDK completes a chat through the gateway, plain and streaming', async () => {
  const client = new OpenAI({ apiKey: sys.apiKey, baseURL: `${sys.url}/v1`, maxRetries: 0 });
  const plain = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello SDK' }] });
  expect(plain.choices[0]!.message.content).toMatch(/^Stub reply \(openai\/gpt-4o-mini\)/);
  expect(plain.usage!.prompt_tokens).toBeGreaterThan(0);
  expect(plain.usage!.total_tokens).toBe(plain.usage!.prompt_tokens + plain.usage!.completion_tokens);

  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Hello SDK' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage: OpenAI.CompletionUsage | undefined;
  let deltas = 0;
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta?.content;
    if (d) {
      text += d;
      deltas++;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  expect(text).toBe(plain.choices[0]!.message.content);
  expect(deltas).toBeGreaterThan(1);
  expect(usage).toMatchObject({ prompt_tokens: plain.usage!.prompt_tokens, completion_tokens: plain.usage!.completion_tokens });
  // A streamed call is billed like any other: one usage event with the provider's own numbers.
  const streamed = await sys.bus.history({ types: 'usage.recorded', last: 1 });
  expect(streamed[0]!.event.type === 'usage.recorded' && streamed[0]!.event.data).toMatchObject({
    provider: 'openai',
    usage_source: 'provider',
    units: { input_tokens: usage!.prompt_tokens, output_tokens: usage!.completion_tokens },
  });
});

test('requests rejected at the door enqueue nothing and carry the standard error shape', async () => {
  const before = await sys.queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
  const badKey = await post(sys, '/v1/chat', { message: 'hi' }, { authorization: 'Bearer tg_not_a_real_key_at_all_000000' });
  const noKey = await post(sys, '/v1/chat', { message: 'hi' });
  const malformed = await post(sys, '/v1/chat', '{"message": "hi"', auth());
  const wrongTypes = await post(sys, '/v1/chat', { message: 42, conversation_id: ['x'], extra: true }, auth());
  const huge = await post(sys, '/v1/chat', { message: 'x'.repeat(2 * 1024 * 1024) }, auth());
  const unknownModel = await post(sys, '/v1/chat', { message: 'hi', model: 'gpt-99-ultra' }, auth());
  const visionModelForChat = await post(sys, '/v1/chat', { message: 'hi', model: 'deepseek-vl2' }, auth());

  expect(badKey.status).toBe(401);
  expect(noKey.status).toBe(401);
  expect(malformed.status).toBe(400);
  expect(malformed.json.error.message).toMatch(/not valid JSON/);
  expect(wrongTypes.status).toBe(400);
  expect(wrongTypes.json.error.code).toBe('validation_failed');
  expect(wrongTypes.json.error.issues.map((i: { path: string }) => i.path).sort()).toEqual(['(body)', 'conversation_id', 'message']);
  expect(huge.status).toBe(413);
  expect(unknownModel.status).toBe(400);
  expect(unknownModel.json.error.message).toMatch(/gpt-99-ultra/);
  expect(visionModelForChat.status).toBe(400);

  for (const r of [badKey, noKey, malformed, wrongTypes, huge, unknownModel]) {
    expect(Object.keys(r.json.error).filter((k) => k !== 'issues').sort()).toEqual(['category', 'code', 'message', 'request_id', 'suggested_actions']);
    expect(r.json.error.request_id).toBe(r.headers.get('x-request-id'));
    expect(r.json.error.suggested_actions.length).toBeGreaterThan(0);
    expect(r.text).not.toMatch(/\bat .+\(.+:\d+:\d+\)|node_modules|tg_not_a_real_key|Error:/);
  }
  expect(badKey.json.error).toMatchObject({ code: 'unauthorized', category: 'authentication' });
  expect(huge.json.error).toMatchObject({ code: 'payload_too_large', category: 'invalid_request' });
  const after = await sys.queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
  expect(after).toEqual(before);
});

test('admin keys: create, scope checks and revocation that takes effect at once', async () => {
  const admin = { authorization: `Bearer ${'admin-token-for-tests-0123456789'}` };
  const created = await post(sys, '/v1/admin/keys', { name: 'ci', user_id: 'user-2', project_id: 'proj-2', scopes: ['chat'] }, admin);
  expect(created.status).toBe(201);
  expect(created.json.key).toMatch(/^tg_[A-Za-z0-9_-]{43}$/);
  const key = created.json.key as string;
  // Only the hash is stored: the raw key appears nowhere in Redis.
  const stored = await sys.redis.get(`${sys.namespace}:apikey-id:${created.json.key_id}`);
  expect(stored).toMatch(/^[a-f0-9]{64}$/);
  expect(stored).not.toContain(key);

  const asUser = await post(sys, '/v1/admin/keys', { user_id: 'x', project_id: 'y' }, { authorization: `Bearer ${key}` });
  expect(asUser.status).toBe(403);
  const badSpec = await post(sys, '/v1/admin/keys', { user_id: 'bad id!', project_id: 'y', scopes: ['root'] }, admin);
  expect(badSpec.status).toBe(400);

  const ok = await post(sys, '/v1/chat', { message: 'hi' }, { authorization: `Bearer ${key}` });
  expect(ok.status).toBe(200);
  const del = await fetch(`${sys.url}/v1/admin/keys/${created.json.key_id}`, { method: 'DELETE', headers: admin });
  expect(del.status).toBe(204);
  const revoked = await post(sys, '/v1/chat', { message: 'hi' }, { authorization: `Bearer ${key}` });
  expect(revoked.status).toBe(401);
});

test('health, readiness and metrics', async () => {
  expect((await fetch(`${sys.url}/healthz`)).status).toBe(200);
  const ready = await fetch(`${sys.url}/readyz`);
  expect(ready.status).toBe(200);
  expect(await ready.json()).toEqual({ status: 'ready', redis: 'ok' });
  const metrics = await (await fetch(`${sys.url}/metrics`)).text();
  expect(metrics).toMatch(/tollgate_http_requests_total\{method="POST",route="\/v1\/chat",status="200"\} \d+/);
  expect(metrics).toMatch(/tollgate_http_requests_total\{method="POST",route="\/v1\/chat",status="401"\} \d+/);
  expect(metrics).toMatch(/tollgate_queue_jobs\{queue="chat",state="completed"\} \d+/);
  expect(metrics).toMatch(/tollgate_http_request_duration_seconds_bucket/);
  expect(await waitFor(async () => /tollgate_error_ratio|tollgate_errors_in_window/.test(await (await fetch(`${sys.url}/metrics`)).text()))).toBe(true);
});
