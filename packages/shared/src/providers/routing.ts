import type { ProviderName } from '../config';
import type { Target } from './types';

const FAMILIES: Array<[RegExp, ProviderName]> = [
  [/^(gpt-|o\d|chatgpt-)/, 'openai'],
  [/^gemini-/, 'gemini'],
  [/^deepseek-/, 'deepseek'],
];

/** Which provider serves a model name; undefined for a model no provider here offers. */
export function providerForModel(model: string): ProviderName | undefined {
  return FAMILIES.find(([re]) => re.test(model))?.[1];
}

/**
 * The requested model first, then the configured chain without that provider. An explicit model
 * still falls back: the response names whoever answered.
 */
export function chainFor(model: string | undefined, fallbackChain: readonly Target[]): Target[] {
  if (!model) return [...fallbackChain];
  const provider = providerForModel(model);
  if (!provider) return [...fallbackChain];
  return [{ provider, model }, ...fallbackChain.filter((t) => t.provider !== provider)];
}
