import { EventBus } from '../src/bus/event-bus';
import { ProviderUnavailableError } from '../src/errors/provider-errors';
import { startSharedBreakers } from '../src/resilience/shared-breakers';
import { testRedis, waitFor } from '../src/testing';

const { redis, prefix, cleanup } = testRedis('shared-breakers');
afterAll(cleanup);

test('an opening on one instance opens the same breaker on the others, and its own echo changes nothing', async () => {
  const bus = new EventBus({ redis, prefix, service: 'chat-workflow' });
  const a = await startSharedBreakers(bus, redis, prefix, 'instance-a', { volumeThreshold: 2, resetTimeout: 60_000 });
  const b = await startSharedBreakers(bus, redis, prefix, 'instance-b', { volumeThreshold: 2, resetTimeout: 60_000 });
  try {
    const fail = () => Promise.reject(new ProviderUnavailableError('503'));
    for (let i = 0; i < 3; i++) await a.breakers.fire('gemini', 'chat', fail).catch(() => undefined);
    expect(a.breakers.state('gemini', 'chat')).toBe('open');
    expect(await waitFor(() => b.breakers.state('gemini', 'chat') === 'open')).toBe(true);
    // B never called Gemini: it learned of the opening and now refuses without calling.
    let called = false;
    await expect(b.breakers.fire('gemini', 'chat', async () => (called = true))).rejects.toMatchObject({ code: 'circuit_open' });
    expect(called).toBe(false);
    // One announcement on the bus, from A, and none echoed back by B.
    const opened = await bus.history({ types: 'circuit.opened' });
    expect(opened.map((e) => e.event.type === 'circuit.opened' && e.event.data.instance)).toEqual(['instance-a']);
    expect(b.breakers.state('deepseek', 'chat')).toBe('closed');
  } finally {
    await a.stop();
    await b.stop();
  }
});
