import type { ProviderClient, ProviderName } from './types';

export interface ProviderEndpoint {
  apiKey: string;
  baseUrl: string;
}

/**
 * One SDK client per provider, built once per process (they keep connection pools).
 * The client modules, and with them the openai and @google/genai SDKs, load on the first call:
 * only the services that call providers pay for them in memory and start-up time.
 */
export function createProviderClients(
  endpoints: Record<ProviderName, ProviderEndpoint>,
  timeoutMs: number,
): Record<ProviderName, ProviderClient> {
  // Deliberately lazy requires; the bundler keeps them lazy too (scripts/build.js).
  const { createOpenAiClient } = require('./openai-client') as typeof import('./openai-client');
  const { createGeminiClient } = require('./gemini-client') as typeof import('./gemini-client');
  return {
    openai: createOpenAiClient('openai', { ...endpoints.openai, timeoutMs }),
    deepseek: createOpenAiClient('deepseek', { ...endpoints.deepseek, timeoutMs }),
    gemini: createGeminiClient({ ...endpoints.gemini, timeoutMs }),
  };
}
