import type { Provider } from './types';

/** Where each provider's SDK finds this stub: the route prefixes the server answers on. */
export const PROVIDER_PATHS: Record<Provider, string> = { openai: '/openai/v1', deepseek: '/deepseek/v1', gemini: '/gemini' };

/** Base URL and key per provider for clients pointed at a running stub (any non-empty key is accepted). */
export function stubEndpoints(stubUrl: string, apiKeys: Partial<Record<Provider, string>> = {}): Record<Provider, { apiKey: string; baseUrl: string }> {
  const entry = (p: Provider) => ({ apiKey: apiKeys[p] ?? 'stub-key', baseUrl: `${stubUrl}${PROVIDER_PATHS[p]}` });
  return { openai: entry('openai'), deepseek: entry('deepseek'), gemini: entry('gemini') };
}
