import { ConfigError, describeProviders, loadConfig } from '../src/config';
import { TollgateError } from '../src/errors/tollgate-error';

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig defaults', () => {
  it('fills every default from an empty environment', () => {
    expect(loadConfig({})).toEqual({
      nodeEnv: 'development',
      logLevel: 'info',
      redisUrl: 'redis://127.0.0.1:6379',
      prefix: 'tollgate',
      gateway: { host: '127.0.0.1', port: 8080 },
      adminToken: undefined,
      stubServer: { host: '127.0.0.1', port: 4010 },
      providers: {
        openai: { apiKey: 'stub-key', baseUrl: 'http://127.0.0.1:4010/openai/v1', stub: true },
        gemini: { apiKey: 'stub-key', baseUrl: 'http://127.0.0.1:4010/gemini', stub: true },
        deepseek: { apiKey: 'stub-key', baseUrl: 'http://127.0.0.1:4010/deepseek/v1', stub: true },
      },
      stubMode: true,
      providerTimeoutMs: 30_000,
      requestDeadlineMs: 60_000,
      maxProviderAttempts: 3,
      chatFallbackChain: [
        { provider: 'gemini', model: 'gemini-2.0-flash' },
        { provider: 'deepseek', model: 'deepseek-chat' },
        { provider: 'openai', model: 'gpt-4o-mini' },
      ],
      chatMaxOutputTokens: 4096,
      chatMaxOutputTokensByModel: {},
      bus: { maxLen: 10_000, maxDeliveries: 5, claimIdleMs: 30_000, partitions: 1 },
      chatWorkerConcurrency: 200,
      visionWorkerConcurrency: 4,
      queuePartitions: 1,
      tenantShards: 1,
      rateLimitPerMinute: 600,
      maxBodyBytes: 1_048_576,
      visionMaxBytes: 8_388_608,
      visionCacheTtlSeconds: 3600,
      cache: { chat_ttl_seconds: 0, rag_ttl_seconds: 300, vision_ttl_seconds: 3600, max_ttl_seconds: 86_400 },
      budgets: { dailyMicros: 50_000_000, weeklyMicros: 300_000_000, monthlyMicros: 1_000_000_000, thresholdsPercent: [50, 80, 100] },
      priceTableFile: undefined,
      flags: { pollMs: 2_000, maxAgeMs: 30_000, environment: 'default' },
    });
  });

  it('treats empty and blank variables as unset', () => {
    const config = loadConfig({ GATEWAY_PORT: '', OPENAI_API_KEY: '   ', LOG_LEVEL: '' });
    expect(config.gateway.port).toBe(8080);
    expect(config.providers.openai.stub).toBe(true);
    expect(config.logLevel).toBe('info');
  });

  it('parses set values into typed fields', () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      LOG_LEVEL: 'debug',
      REDIS_URL: 'rediss://:pw@redis.internal:6380/0',
      TOLLGATE_PREFIX: 'tg-staging',
      GATEWAY_HOST: '0.0.0.0',
      GATEWAY_PORT: '9090',
      ADMIN_TOKEN: 'a'.repeat(16),
      PROVIDER_TIMEOUT_MS: '5000',
      MAX_PROVIDER_ATTEMPTS: '5',
      CHAT_FALLBACK_CHAIN: ' openai:gpt-4o-mini-2024-07-18 , deepseek:deepseek-chat ',
      BUS_MAX_LEN: '500',
      BUDGET_DAILY_MICROS: '0',
      BUDGET_THRESHOLDS: '100,50,80,80',
      PRICE_TABLE_FILE: '/etc/tollgate/prices.json',
    });
    expect(config).toMatchObject({
      nodeEnv: 'production',
      logLevel: 'debug',
      redisUrl: 'rediss://:pw@redis.internal:6380/0',
      prefix: 'tg-staging',
      gateway: { host: '0.0.0.0', port: 9090 },
      adminToken: 'aaaaaaaaaaaaaaaa',
      providerTimeoutMs: 5000,
      maxProviderAttempts: 5,
      chatFallbackChain: [
        { provider: 'openai', model: 'gpt-4o-mini-2024-07-18' },
        { provider: 'deepseek', model: 'deepseek-chat' },
      ],
      bus: { maxLen: 500, maxDeliveries: 5, claimIdleMs: 30_000, partitions: 1 },
      budgets: { dailyMicros: 0, thresholdsPercent: [50, 80, 100] },
      priceTableFile: '/etc/tollgate/prices.json',
    });
  });
});

describe('BUS_PARTITIONS', () => {
  it('defaults to 1 on one Redis and to 6 on a cluster; a set value wins either way', () => {
    expect(loadConfig({}).bus.partitions).toBe(1);
    expect(loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000,127.0.0.1:7001' }).bus.partitions).toBe(6);
    expect(loadConfig({ REDIS_CLUSTER_NODES: '  ' }).bus.partitions).toBe(1);
    expect(loadConfig({ BUS_PARTITIONS: '12' }).bus.partitions).toBe(12);
    expect(loadConfig({ BUS_PARTITIONS: '1', REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).bus.partitions).toBe(1);
    expect(loadConfig({ BUS_PARTITIONS: '256' }).bus.partitions).toBe(256);
  });

  it.each(['0', '257', '-1', '2.5', 'six'])('refuses %p at start-up, naming the range', (raw) => {
    expect(configError({ BUS_PARTITIONS: raw }).message).toBe(`Invalid configuration: BUS_PARTITIONS: expected an integer 1-256, got "${raw}"`);
  });
});

describe('TENANT_SHARDS', () => {
  it('defaults to 1 on one Redis and to 6 on a cluster; a set value wins either way', () => {
    expect(loadConfig({}).tenantShards).toBe(1);
    expect(loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).tenantShards).toBe(6);
    expect(loadConfig({ TENANT_SHARDS: '1', REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).tenantShards).toBe(1);
    expect(loadConfig({ TENANT_SHARDS: '64' }).tenantShards).toBe(64);
  });

  it.each(['0', '65', 'x'])('refuses %p at start-up, naming the range', (raw) => {
    expect(configError({ TENANT_SHARDS: raw }).message).toBe(`Invalid configuration: TENANT_SHARDS: expected an integer 1-64, got "${raw}"`);
  });
});

describe('loadConfig errors', () => {
  it('reports every bad variable in one ConfigError', () => {
    const err = configError({
      GATEWAY_PORT: '70000',
      STUB_PORT: 'http',
      BUS_MAX_LEN: '0',
      BUS_MAX_DELIVERIES: '2.5',
      LOG_LEVEL: 'verbose',
      REDIS_URL: 'http://127.0.0.1:6379',
      ADMIN_TOKEN: 'short-secret',
      CHAT_FALLBACK_CHAIN: 'gemini:gemini-2.0-flash,anthropic:claude,openai',
      BUDGET_DAILY_MICROS: '-1',
      BUDGET_THRESHOLDS: '50,eighty',
      OPENAI_BASE_URL: 'not a url',
      TOLLGATE_PREFIX: 'tg:{x}',
      // Valid ones must not be reported.
      GATEWAY_HOST: '0.0.0.0',
      RATE_LIMIT_PER_MINUTE: '60',
    });
    expect(err).toBeInstanceOf(TollgateError);
    expect(err.code).toBe('invalid_config');
    expect(err.problems.map((p) => p.variable).sort()).toEqual(
      [
        'ADMIN_TOKEN',
        'BUDGET_DAILY_MICROS',
        'BUDGET_THRESHOLDS',
        'BUS_MAX_DELIVERIES',
        'BUS_MAX_LEN',
        'CHAT_FALLBACK_CHAIN',
        'GATEWAY_PORT',
        'LOG_LEVEL',
        'OPENAI_BASE_URL',
        'REDIS_URL',
        'STUB_PORT',
        'TOLLGATE_PREFIX',
      ].sort(),
    );
    expect(err.message).toMatch(/^Invalid configuration: /);
    for (const fragment of [
      'GATEWAY_PORT: expected a port number 1-65535, got "70000"',
      'STUB_PORT: expected a port number 1-65535, got "http"',
      'BUS_MAX_LEN: expected an integer >= 1, got "0"',
      'BUS_MAX_DELIVERIES: expected an integer >= 1, got "2.5"',
      'LOG_LEVEL: expected one of error|warn|info|debug, got "verbose"',
      'REDIS_URL: expected a redis:// or rediss:// URL',
      'ADMIN_TOKEN: must be at least 16 characters when set',
      'unknown provider "anthropic"',
      '"openai" is not provider:model',
      'BUDGET_DAILY_MICROS: expected an integer >= 0, got "-1"',
      'BUDGET_THRESHOLDS: expected comma-separated integer percentages 1-1000',
      'OPENAI_BASE_URL: expected an http(s) URL',
      'TOLLGATE_PREFIX: expected 1-64 characters',
    ]) {
      expect(err.message).toContain(fragment);
    }
    expect(err.message).not.toContain('GATEWAY_HOST');
    // A rejected secret is named, never echoed.
    expect(err.message).not.toContain('short-secret');
  });

  it('rejects a duplicated fallback entry', () => {
    expect(configError({ CHAT_FALLBACK_CHAIN: 'openai:gpt-4o,openai:gpt-4o' }).message).toBe(
      'Invalid configuration: CHAT_FALLBACK_CHAIN: expected a comma-separated list of provider:model with provider one of openai|gemini|deepseek ("openai:gpt-4o" is listed twice)',
    );
  });

  it('names the cluster node that is not host:port, and takes a good list', () => {
    expect(configError({ REDIS_CLUSTER_NODES: '10.0.0.1:7000,redis-1' }).message).toBe(
      'Invalid configuration: REDIS_CLUSTER_NODES: comma-separated host:port of cluster nodes: "redis-1" is not host:port',
    );
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000, [::1]:7001' })).not.toThrow();
  });
});

describe('provider resolution', () => {
  it('uses the real API for providers with a key and the stub for the rest', () => {
    const config = loadConfig({ OPENAI_API_KEY: 'sk-real-openai-key-123456', GEMINI_API_KEY: 'AIzaSyRealGeminiKey_0123456789abcdef' });
    expect(config.providers).toEqual({
      openai: { apiKey: 'sk-real-openai-key-123456', baseUrl: 'https://api.openai.com/v1', stub: false },
      gemini: { apiKey: 'AIzaSyRealGeminiKey_0123456789abcdef', baseUrl: 'https://generativelanguage.googleapis.com', stub: false },
      deepseek: { apiKey: 'stub-key', baseUrl: 'http://127.0.0.1:4010/deepseek/v1', stub: true },
    });
    expect(config.stubMode).toBe(false);
  });

  it('all real: default base URLs per provider', () => {
    const config = loadConfig({ OPENAI_API_KEY: 'k1', GEMINI_API_KEY: 'k2', DEEPSEEK_API_KEY: 'k3' });
    expect(config.providers.deepseek).toEqual({ apiKey: 'k3', baseUrl: 'https://api.deepseek.com/v1', stub: false });
    expect(config.stubMode).toBe(false);
  });

  it('points the stub at STUB_HOST:STUB_PORT', () => {
    const config = loadConfig({ STUB_HOST: 'stub-llm', STUB_PORT: '5000' });
    expect(config.providers.openai.baseUrl).toBe('http://stub-llm:5000/openai/v1');
    expect(config.providers.gemini.baseUrl).toBe('http://stub-llm:5000/gemini');
    expect(config.stubMode).toBe(true);
  });

  it('lets *_BASE_URL win, with or without a key', () => {
    const config = loadConfig({
      OPENAI_API_KEY: 'sk-proxy-key-abcdefgh',
      OPENAI_BASE_URL: 'https://llm-proxy.example.com/v1/',
      DEEPSEEK_BASE_URL: 'http://other-stub:7000/deepseek/v1',
    });
    expect(config.providers.openai).toEqual({ apiKey: 'sk-proxy-key-abcdefgh', baseUrl: 'https://llm-proxy.example.com/v1', stub: false });
    expect(config.providers.deepseek).toEqual({ apiKey: 'stub-key', baseUrl: 'http://other-stub:7000/deepseek/v1', stub: true });
  });
});

describe('describeProviders', () => {
  it('says where each provider goes', () => {
    expect(describeProviders(loadConfig({ GEMINI_API_KEY: 'AIzaSyRealGeminiKey_0123456789abcdef' }))).toBe(
      'providers: openai -> stub at http://127.0.0.1:4010/openai/v1 (no OPENAI_API_KEY), ' +
        'gemini -> https://generativelanguage.googleapis.com, ' +
        'deepseek -> stub at http://127.0.0.1:4010/deepseek/v1 (no DEEPSEEK_API_KEY)',
    );
  });

  it('leaks no key material, not even credentials inside a base URL', () => {
    const secrets = ['sk-live-openai-abcdefghijkl', 'AIzaSyLiveGemini_0123456789abcdefghi', 'ds-live-deepseek-key', 'proxypass', 'qsecret'];
    const line = describeProviders(
      loadConfig({
        OPENAI_API_KEY: secrets[0],
        GEMINI_API_KEY: secrets[1],
        DEEPSEEK_API_KEY: secrets[2],
        OPENAI_BASE_URL: 'https://user:proxypass@proxy.example.com/v1?key=qsecret',
      }),
    );
    expect(line).toBe(
      'providers: openai -> https://proxy.example.com/v1, gemini -> https://generativelanguage.googleapis.com, deepseek -> https://api.deepseek.com/v1',
    );
    for (const secret of secrets) expect(line).not.toContain(secret);
  });
});
