import type { Target } from '@tollgate/shared';
import { ResultCache } from '../src/result-cache';
import { meetsQuality, routeVision, VISION_TARGETS } from '../src/routing';

const deepseek: Target = { provider: 'deepseek', model: 'deepseek-vl2' };
const gemini: Target = { provider: 'gemini', model: 'gemini-2.0-flash' };

test('standard goes to DeepSeek first, high to Gemini, each with the other as fallback', () => {
  expect(VISION_TARGETS).toEqual({ standard: deepseek, high: gemini });
  expect(routeVision('standard', false)).toEqual({ served: 'standard', degraded: false, chain: [deepseek, gemini], cacheable: [deepseek, gemini] });
  expect(routeVision('high', false)).toEqual({ served: 'high', degraded: false, chain: [gemini, deepseek], cacheable: [gemini] });
});

test('near a hard budget only high degrades; standard is already the cheapest', () => {
  expect(routeVision('high', true)).toEqual({ served: 'standard', degraded: true, chain: [deepseek, gemini], cacheable: [gemini, deepseek] });
  expect(routeVision('standard', true)).toMatchObject({ served: 'standard', degraded: false });
});

test('the cache fingerprint separates image, prompt and provider/model', () => {
  const sha = 'a'.repeat(64);
  const base = ResultCache.fingerprint(sha, 'What is this?', { provider: 'deepseek', model: 'deepseek-vl2' });
  expect(base).toMatch(/^[a-f0-9]{64}$/);
  expect(ResultCache.fingerprint(sha, 'What is this?', { provider: 'deepseek', model: 'deepseek-vl2' })).toBe(base);
  expect(ResultCache.fingerprint('b'.repeat(64), 'What is this?', { provider: 'deepseek', model: 'deepseek-vl2' })).not.toBe(base);
  expect(ResultCache.fingerprint(sha, 'What is that?', { provider: 'deepseek', model: 'deepseek-vl2' })).not.toBe(base);
  expect(ResultCache.fingerprint(sha, 'What is this?', { provider: 'gemini', model: 'gemini-2.0-flash' })).not.toBe(base);
});

test('only the high-quality model meets high; anything meets standard', () => {
  expect(meetsQuality(gemini, 'high')).toBe(true);
  expect(meetsQuality(deepseek, 'high')).toBe(false);
  expect(meetsQuality(deepseek, 'standard')).toBe(true);
});
