import { waitFor } from '@tollgate/shared/src/testing';
import { post, startSystem, type System } from './harness';

/** Recovery through the whole chat path: retries, fallback, breakers, deadlines, rate limits. */

let sys: System | undefined;
afterEach(async () => {
  await sys?.close();
  sys = undefined;
});

const chat = (s: System, message: string, requestId: string) =>
  post(s, '/v1/chat', { message }, { authorization: `Bearer ${s.apiKey}`, 'x-request-id': requestId });

test('429 twice then success: one reply from the same provider, every attempt recorded, no fallback', async () => {
  sys = await startSystem('gw-429', { faults: { retryAfterSeconds: 0, script: [{ provider: 'gemini', fault: '429', times: 2 }] } });
  const res = await chat(sys, 'retry me', 'req-429');
  expect(res.status).toBe(200);
  expect(res.json).toMatchObject({ provider: 'gemini', fallback_used: false, attempts: 3 });

  const stats = sys.stub.stats();
  expect(stats.byProvider.gemini['gemini-2.0-flash']).toMatchObject({ requests: 3, successes: 1, faults: expect.objectContaining({ '429': 2 }) });
  expect(stats.byProvider.deepseek).toEqual({});

  const events = await sys.bus.history({ filter: { correlation_id: 'req-429' } });
  const errors = events.filter((e) => e.event.type === 'error.occurred').map((e) => e.event.type === 'error.occurred' && e.event.data);
  expect(errors).toHaveLength(2);
  expect(errors.every((e) => e && e.category === 'rate_limit' && e.provider === 'gemini')).toBe(true);
  // Exactly one billed call, so exactly one usage event.
  expect(events.filter((e) => e.event.type === 'usage.recorded')).toHaveLength(1);
  expect(events.map((e) => e.event.type).at(-1)).toBe('workflow.completed');
});

test('primary always 503: the fallback answers, the breaker opens on the failing calls and then skips the primary', async () => {
  sys = await startSystem('gw-503', { faults: { providers: { gemini: { rate503: 1 } } } });
  const replies = [];
  for (let i = 0; i < 5; i++) replies.push(await chat(sys, `hello ${i}`, `req-503-${i}`));

  for (const r of replies) {
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ provider: 'deepseek', model: 'deepseek-chat', fallback_used: true });
    expect(r.headers.get('x-tollgate-provider')).toBe('deepseek');
    expect(r.json.reply).toMatch(/^Stub reply \(deepseek\/deepseek-chat\)/);
  }
  // volumeThreshold 3: three failing calls open it; requests 4 and 5 never reach Gemini.
  expect(sys.stub.stats().byProvider.gemini['gemini-2.0-flash']!.requests).toBe(3);
  const opened = await sys.bus.history({ types: 'circuit.opened' });
  expect(opened).toHaveLength(1);
  expect(opened[0]!.event.type === 'circuit.opened' && opened[0]!.event.data).toMatchObject({ breaker: 'gemini:chat', provider: 'gemini', operation: 'chat' });
  // The opening is visible to operators on /metrics, once the gateway's tail of the bus has read
  // the event (it lingers between reads, so not necessarily by the time it is in the history).
  const open = /tollgate_circuit_state\{breaker="gemini:chat"\} 1/;
  const metricsUrl = `${sys.url}/metrics`;
  expect(await waitFor(async () => open.test(await (await fetch(metricsUrl)).text()), 5_000, 50)).toBe(true);
  // Only deepseek calls were billed: one usage event per request, all deepseek.
  const usage = await sys.bus.history({ types: 'usage.recorded' });
  expect(usage.map((u) => u.event.type === 'usage.recorded' && u.event.data.provider)).toEqual(Array(5).fill('deepseek'));
});

test('every provider failing ends in one classified 5xx error, not a retry storm', async () => {
  sys = await startSystem('gw-down', { faults: { rate503: 1 }, maxAttempts: 3 });
  const res = await chat(sys, 'anyone there?', 'req-down');
  expect(res.status).toBe(502);
  expect(res.json.error).toMatchObject({ category: 'provider_unavailable', request_id: 'req-down' });
  expect(res.json.error.suggested_actions.length).toBeGreaterThan(0);
  // 503 is not retried on the same provider: one call each, then the chain is exhausted.
  expect(sys.stub.stats().totals.requests).toBe(3);
  const events = await sys.bus.history({ filter: { correlation_id: 'req-down' } });
  const types = events.map((e) => e.event.type);
  expect(types.at(-1)).toBe('workflow.failed');
  expect(types).not.toContain('usage.recorded');
  const failed = events.at(-1)!.event;
  expect(failed.type === 'workflow.failed' && failed.data.error).toMatchObject({ category: 'provider_unavailable', strategy: 'fallback_provider' });
});

test('a provider that hangs is cut off by the call timeout and the next provider answers', async () => {
  sys = await startSystem('gw-hang', { faults: { providers: { gemini: { hangRate: 1 } } }, maxAttempts: 1 });
  const res = await chat(sys, 'are you awake?', 'req-hang');
  expect(res.status).toBe(200);
  expect(res.json).toMatchObject({ provider: 'deepseek', fallback_used: true });
  const errors = await sys.bus.history({ types: 'error.occurred', filter: { correlation_id: 'req-hang' } });
  expect(errors.map((e) => e.event.type === 'error.occurred' && e.event.data.category)).toEqual(['timeout']);
});

test('a malformed provider body is an error the chain recovers from, not a crash', async () => {
  sys = await startSystem('gw-malformed', { faults: { script: [{ provider: 'gemini', fault: 'malformed', times: 5 }] }, maxAttempts: 1 });
  const res = await chat(sys, 'parse this', 'req-malformed');
  expect(res.status).toBe(200);
  expect(res.json.provider).toBe('deepseek');
});

test('the per-key rate limit answers 429 with Retry-After and queues nothing', async () => {
  sys = await startSystem('gw-rl', { rateLimitPerMinute: 2 });
  expect((await chat(sys, 'one', 'rl-1')).status).toBe(200);
  expect((await chat(sys, 'two', 'rl-2')).status).toBe(200);
  const before = await sys.queue.getJobCounts('completed', 'waiting', 'active');
  const limited = await chat(sys, 'three', 'rl-3');
  expect(limited.status).toBe(429);
  expect(limited.json.error).toMatchObject({ code: 'rate_limited', category: 'rate_limit', request_id: 'rl-3' });
  expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
  expect(await sys.queue.getJobCounts('completed', 'waiting', 'active')).toEqual(before);
});
