// Services that call no provider (gateway, cost-ledger, alerting) must not load the provider SDKs
// or the tokenizer's ranks, about 70 MB of memory together: importing @tollgate/shared loads none
// of them, and each loads on first use.
const HEAVY = ['openai', 'openai/core/error', '@google/genai', 'js-tiktoken/lite', 'js-tiktoken/ranks/o200k_base'];

/** Runs `body` with a fresh module registry in which requiring any heavy module throws. */
function withHeavyModulesForbidden(body: () => void): void {
  jest.isolateModules(() => {
    for (const name of HEAVY) {
      jest.doMock(name, () => {
        throw new Error(`${name} was loaded`);
      });
    }
    body();
  });
}

type Shared = typeof import('../src');

describe('provider SDKs load lazily', () => {
  afterEach(() => {
    for (const name of HEAVY) jest.dontMock(name);
  });

  it('importing @tollgate/shared and classifying errors loads no SDK and no tokenizer', () => {
    withHeavyModulesForbidden(() => {
      const shared = require('../src') as Shared;
      const c = shared.classify(Object.assign(new Error('upstream'), { name: 'ApiError', status: 503 }));
      expect(c.category).toBe('provider_unavailable');
      expect(shared.classify(new Error('boom')).code).toBe('internal_error');
    });
  });

  it('a provider client loads its SDK on first use, and only its own; countTokens loads the tokenizer', () => {
    withHeavyModulesForbidden(() => {
      const shared = require('../src') as Shared;
      const endpoint = { apiKey: 'k', baseUrl: 'http://127.0.0.1:1' };
      const clients = shared.createProviderClients({ openai: endpoint, deepseek: endpoint, gemini: endpoint }, 1000);
      expect(Object.keys(clients).sort()).toEqual(['deepseek', 'gemini', 'openai']);
      expect(() => clients.openai).toThrow(/openai was loaded/);
      expect(() => clients.gemini).toThrow(/@google\/genai was loaded/);
      expect(() => shared.countTokens('hello')).toThrow(/was loaded/);
    });
  });

  it('each provider client is built once and kept', () => {
    const { createProviderClients } = require('../src/providers/clients') as typeof import('../src/providers/clients');
    const endpoint = { apiKey: 'k', baseUrl: 'http://127.0.0.1:1' };
    const clients = createProviderClients({ openai: endpoint, deepseek: endpoint, gemini: endpoint }, 1000);
    expect(clients.openai).toBe(clients.openai);
    expect(clients.gemini).toBe(clients.gemini);
    expect(clients.deepseek).not.toBe(clients.openai);
  });

  it('counts tokens once loaded', async () => {
    const { countTokens, countMessageTokens } = await import('../src/providers/tokens');
    expect(countTokens('hello world')).toBe(2);
    expect(countMessageTokens([{ role: 'user', content: 'hello world' }])).toBe(3 + 3 + 2);
  });
});
