import OpenAI from 'openai';
import { backoffDelay, retryDelayFor } from '../src/errors/backoff';
// OpenAI errors reach the classifier in processes that loaded the SDK, i.e. its provider client.
import '../src/errors/openai-errors';
import { classify } from '../src/errors/classify';
import { ProviderUnavailableError } from '../src/errors/provider-errors';

const fixed = (r: number) => () => r;

describe('backoffDelay', () => {
  it('doubles the window per attempt from a 200 ms base', () => {
    const almostOne = fixed(0.999999);
    expect([0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, { random: almostOne }))).toEqual([199, 399, 799, 1599, 3199, 6399]);
    expect([0, 1, 2].map((a) => backoffDelay(a, { random: fixed(0.5) }))).toEqual([100, 200, 400]);
  });

  it('caps the window at capMs (default 10 s)', () => {
    expect(backoffDelay(6, { random: fixed(0.5) })).toBe(5000);
    expect(backoffDelay(10, { random: fixed(0.5) })).toBe(5000);
    expect(backoffDelay(50, { random: fixed(0.999999) })).toBe(9999);
    expect(backoffDelay(3, { baseMs: 100, capMs: 500, random: fixed(0.5) })).toBe(250);
  });

  it('is full jitter: anywhere from 0 to just under the window', () => {
    expect(backoffDelay(4, { random: fixed(0) })).toBe(0);
    expect(backoffDelay(4, { random: fixed(1) })).toBe(3199);
    let seed = 42;
    const lcg = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const samples = Array.from({ length: 500 }, () => backoffDelay(3, { random: lcg }));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...samples)).toBeLessThan(1600);
    expect(samples.every(Number.isInteger)).toBe(true);
    // Spread, not clustered near the top (which equal-jitter would do).
    expect(samples.filter((s) => s < 400).length).toBeGreaterThan(50);
  });

  it('honours a custom base', () => {
    expect(backoffDelay(2, { baseMs: 1000, random: fixed(0.25) })).toBe(1000);
  });
});

describe('retryDelayFor', () => {
  const rateLimited = (h: Record<string, string>) => classify(new OpenAI.RateLimitError(429, { message: 'x' }, undefined, new Headers(h)));

  it('uses Retry-After when the server sent one, ignoring capMs', () => {
    const c = rateLimited({ 'retry-after': '30' });
    expect(retryDelayFor(c, 0, { random: fixed(0.5), capMs: 1000 })).toBe(30_000);
  });

  it('still bounds Retry-After at 60 s', () => {
    const c = { ...rateLimited({}), retryAfterMs: 600_000 };
    expect(retryDelayFor(c, 0)).toBe(60_000);
  });

  it('falls back to jittered backoff without Retry-After', () => {
    const c = classify(new ProviderUnavailableError('down'));
    expect(c.retryAfterMs).toBeUndefined();
    expect(retryDelayFor(c, 2, { random: fixed(0.5) })).toBe(400);
    expect(retryDelayFor(rateLimited({}), 3, { random: fixed(0.5) })).toBe(800);
  });
});
