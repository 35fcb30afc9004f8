import type { ProviderClient, ProviderName } from './types';

export interface ProviderEndpoint {
  apiKey: string;
  baseUrl: string;
}

/**
 * One SDK client per provider, built once per process (they keep connection pools), on first
 * use: a client module, and with it the openai or @google/genai SDK, loads only when a call goes
 * to that provider. Services that call no provider, and workers whose chains never reach a
 * provider, do not pay for its SDK in memory (about 20 MB each) or start-up time.
 */
export function createProviderClients(
  endpoints: Record<ProviderName, ProviderEndpoint>,
  timeoutMs: number,
): Record<ProviderName, ProviderClient> {
  // Deliberately lazy requires; the bundler keeps them lazy too (scripts/build.js).
  const builders: Record<ProviderName, () => ProviderClient> = {
    openai: () => (require('./openai-client') as typeof import('./openai-client')).createOpenAiClient('openai', { ...endpoints.openai, timeoutMs }),
    deepseek: () => (require('./openai-client') as typeof import('./openai-client')).createOpenAiClient('deepseek', { ...endpoints.deepseek, timeoutMs }),
    gemini: () => (require('./gemini-client') as typeof import('./gemini-client')).createGeminiClient({ ...endpoints.gemini, timeoutMs }),
  };
  const built: Partial<Record<ProviderName, ProviderClient>> = {};
  const clients = {} as Record<ProviderName, ProviderClient>;
  for (const name of Object.keys(builders) as ProviderName[]) {
    Object.defineProperty(clients, name, { enumerable: true, get: () => (built[name] ??= builders[name]()) });
  }
  return clients;
}
