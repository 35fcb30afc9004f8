import { type Target, tenantPrefix } from '@tollgate/shared';
import { visionCacheKey } from '../src/vision-workflow';
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

test('the cache key starts with the tenant and separates image, prompt, provider/model and partition', () => {
  const sha = 'a'.repeat(64);
  const job = { user_id: 'u1', project_id: 'p1', prompt: 'What is this?' };
  const key = (j: Partial<typeof job> & { cache?: { mode: 'default'; partition: string } }, s = sha, t: Target = deepseek) => visionCacheKey('ns', { ...job, ...j }, s, t).key;
  const base = key({});
  expect(base.startsWith(tenantPrefix('ns', 'p1', 'u1'))).toBe(true);
  expect(base.slice(tenantPrefix('ns', 'p1', 'u1').length)).toMatch(/^vision:default:[a-f0-9]{64}$/);
  expect(key({})).toBe(base);
  expect(key({}, 'b'.repeat(64))).not.toBe(base);
  expect(key({ prompt: 'What is that?' })).not.toBe(base);
  expect(key({}, sha, gemini)).not.toBe(base);
  expect(key({ user_id: 'u2' })).not.toBe(base);
  expect(key({ project_id: 'p2' })).not.toBe(base);
  expect(key({ cache: { mode: 'default', partition: 'exp' } })).not.toBe(base);
});

test('only the high-quality model meets high; anything meets standard', () => {
  expect(meetsQuality(gemini, 'high')).toBe(true);
  expect(meetsQuality(deepseek, 'high')).toBe(false);
  expect(meetsQuality(deepseek, 'standard')).toBe(true);
});
