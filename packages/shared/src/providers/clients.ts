import { createGeminiClient } from './gemini-client';
import { createOpenAiClient } from './openai-client';
import type { ProviderClient, ProviderName } from './types';

export interface ProviderEndpoint {
  apiKey: string;
  baseUrl: string;
}

/** One SDK client per provider, built once per process (they keep connection pools). */
export function createProviderClients(
  endpoints: Record<ProviderName, ProviderEndpoint>,
  timeoutMs: number,
): Record<ProviderName, ProviderClient> {
  return {
    openai: createOpenAiClient('openai', { ...endpoints.openai, timeoutMs }),
    deepseek: createOpenAiClient('deepseek', { ...endpoints.deepseek, timeoutMs }),
    gemini: createGeminiClient({ ...endpoints.gemini, timeoutMs }),
  };
}
