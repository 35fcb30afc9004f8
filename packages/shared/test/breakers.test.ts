import OpenAI from 'openai';
import { BreakerRegistry, type BreakerOptions, type CircuitEventData } from '../src/resilience/breakers';
import { CircuitOpenError, DeadlineExceededError, ProviderUnavailableError } from '../src/errors/provider-errors';
// OpenAI errors reach the classifier in processes that loaded the SDK, i.e. its provider client.
import '../src/errors/openai-errors';
import { classify } from '../src/errors/classify';

type Published = { type: 'circuit.opened' | 'circuit.closed'; data: CircuitEventData };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(options?: BreakerOptions) {
  const published: Published[] = [];
  const registry = new BreakerRegistry({
    publish: (type, data) => {
      published.push({ type, data });
    },
    options: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeout: 100, ...options },
  });
  registries.push(registry);
  return { registry, published };
}

const registries: BreakerRegistry[] = [];
afterEach(() => {
  while (registries.length) registries.pop()?.shutdown();
});

function failing(error: () => unknown) {
  const fn = jest.fn(async () => {
    throw error();
  });
  return fn;
}

const down = () => new ProviderUnavailableError('503 from upstream');

describe('BreakerRegistry', () => {
  it('opens on the failing call itself and then rejects without calling fn', async () => {
    const { registry, published } = setup();
    const fn = failing(down);

    for (let i = 1; i <= 2; i++) {
      await expect(registry.fire('openai', 'chat', fn)).rejects.toBeInstanceOf(ProviderUnavailableError);
      expect(registry.state('openai', 'chat')).toBe('closed');
    }
    await expect(registry.fire('openai', 'chat', fn)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(registry.state('openai', 'chat')).toBe('open');
    expect(fn).toHaveBeenCalledTimes(3);

    const rejected = await registry.fire('openai', 'chat', fn).catch((e: unknown) => e);
    expect(rejected).toBeInstanceOf(CircuitOpenError);
    expect((rejected as CircuitOpenError).breaker).toBe('openai:chat');
    expect(classify(rejected).strategy).toBe('circuit_break');
    await expect(registry.fire('openai', 'chat', fn)).rejects.toBeInstanceOf(CircuitOpenError);
    expect(fn).toHaveBeenCalledTimes(3);

    expect(published).toEqual([
      {
        type: 'circuit.opened',
        data: { breaker: 'openai:chat', provider: 'openai', operation: 'chat', failures: 3, reason: 'provider_unavailable' },
      },
    ]);

    const snap = registry.snapshot();
    expect(snap).toEqual([
      { breaker: 'openai:chat', provider: 'openai', operation: 'chat', state: 'open', failures: 3, successes: 0, rejects: 2 },
    ]);
  });

  it('half-opens after resetTimeout and closes on a successful probe, publishing circuit.closed', async () => {
    const { registry, published } = setup();
    const fn = failing(() => new OpenAI.InternalServerError(500, { message: 'boom' }, undefined, new Headers()));
    for (let i = 0; i < 3; i++) await registry.fire('gemini', 'vision', fn).catch(() => undefined);
    expect(registry.state('gemini', 'vision')).toBe('open');

    await sleep(150);
    expect(registry.state('gemini', 'vision')).toBe('half_open');

    const ok = jest.fn(async () => 'answer');
    await expect(registry.fire('gemini', 'vision', ok)).resolves.toBe('answer');
    expect(ok).toHaveBeenCalledTimes(1);
    expect(registry.state('gemini', 'vision')).toBe('closed');
    expect(published.map((p) => p.type)).toEqual(['circuit.opened', 'circuit.closed']);
    expect(published[1]?.data).toMatchObject({ breaker: 'gemini:vision', provider: 'gemini', operation: 'vision', reason: 'probe_succeeded' });
  });

  it('re-opens on a failed probe without announcing a second incident', async () => {
    const { registry, published } = setup();
    const fn = failing(down);
    for (let i = 0; i < 3; i++) await registry.fire('openai', 'chat', fn).catch(() => undefined);
    await sleep(150);
    expect(registry.state('openai', 'chat')).toBe('half_open');

    await expect(registry.fire('openai', 'chat', fn)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(fn).toHaveBeenCalledTimes(4);
    expect(registry.state('openai', 'chat')).toBe('open');
    expect(published.map((p) => p.type)).toEqual(['circuit.opened']);
  });

  it('never opens on errors that say nothing about provider health', async () => {
    const { registry, published } = setup();
    const errors: Array<() => unknown> = [
      () => new OpenAI.BadRequestError(400, { message: 'bad' }, undefined, new Headers()),
      () => new OpenAI.AuthenticationError(401, { message: 'key' }, undefined, new Headers()),
      () => new OpenAI.RateLimitError(429, { message: 'slow' }, undefined, new Headers()),
      () => new TypeError('a bug in our code'),
    ];
    let calls = 0;
    for (let round = 0; round < 3; round++) {
      for (const make of errors) {
        const fn = failing(make);
        await expect(registry.fire('openai', 'chat', fn)).rejects.toBeDefined();
        calls += fn.mock.calls.length;
      }
    }
    expect(calls).toBe(12);
    expect(registry.state('openai', 'chat')).toBe('closed');
    expect(published).toEqual([]);
    expect(registry.snapshot()[0]?.failures).toBe(0);
  });

  it('counts timeouts and network errors', async () => {
    const { registry } = setup();
    const network = failing(() => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    for (let i = 0; i < 3; i++) await registry.fire('deepseek', 'chat', network).catch(() => undefined);
    expect(registry.state('deepseek', 'chat')).toBe('open');

    const slow = setup({ timeout: 20 });
    const hang = jest.fn(() => new Promise<string>((r) => setTimeout(() => r('late'), 200).unref()));
    const first = await slow.registry.fire('gemini', 'chat', hang).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(DeadlineExceededError);
    for (let i = 0; i < 2; i++) await slow.registry.fire('gemini', 'chat', hang).catch(() => undefined);
    expect(slow.registry.state('gemini', 'chat')).toBe('open');
    expect(slow.published[0]?.data.reason).toBe('timeout');
  });

  it('applyRemote opens and closes locally without publishing', async () => {
    const { registry, published } = setup({ resetTimeout: 10_000 });
    registry.applyRemote('circuit.opened', { breaker: 'openai:chat', provider: 'openai', operation: 'chat', failures: 7, reason: 'timeout' });
    expect(registry.state('openai', 'chat')).toBe('open');
    const fn = jest.fn(async () => 'x');
    await expect(registry.fire('openai', 'chat', fn)).rejects.toBeInstanceOf(CircuitOpenError);
    expect(fn).not.toHaveBeenCalled();

    registry.applyRemote('circuit.closed', { breaker: 'openai:chat', provider: 'openai', operation: 'chat', failures: 0, reason: 'probe_succeeded' });
    expect(registry.state('openai', 'chat')).toBe('closed');
    await expect(registry.fire('openai', 'chat', fn)).resolves.toBe('x');
    expect(published).toEqual([]);
  });

  it('keeps separate keys independent', async () => {
    const { registry } = setup();
    const fn = failing(down);
    for (let i = 0; i < 3; i++) await registry.fire('openai', 'chat', fn).catch(() => undefined);
    expect(registry.state('openai', 'chat')).toBe('open');
    expect(registry.state('openai', 'vision')).toBe('closed');
    expect(registry.state('gemini', 'chat')).toBe('closed');
    await expect(registry.fire('openai', 'vision', async () => 1)).resolves.toBe(1);
    await expect(registry.fire('gemini', 'chat', async () => 2)).resolves.toBe(2);
    expect(registry.snapshot().map((s) => [s.breaker, s.state])).toEqual([
      ['openai:chat', 'open'],
      ['openai:vision', 'closed'],
      ['gemini:chat', 'closed'],
    ]);
  });

  it('survives a publisher that throws or rejects', async () => {
    for (const publish of [
      () => {
        throw new Error('bus down');
      },
      () => Promise.reject(new Error('bus down')),
    ]) {
      const registry = new BreakerRegistry({ publish, options: { volumeThreshold: 1, resetTimeout: 100 } });
      registries.push(registry);
      await expect(registry.fire('openai', 'chat', failing(down))).rejects.toBeInstanceOf(ProviderUnavailableError);
      expect(registry.state('openai', 'chat')).toBe('open');
    }
  });

  it('refuses work after shutdown', async () => {
    const registry = new BreakerRegistry();
    registry.shutdown();
    await expect(registry.fire('openai', 'chat', async () => 1)).rejects.toMatchObject({ code: 'registry_shutdown' });
  });
});
