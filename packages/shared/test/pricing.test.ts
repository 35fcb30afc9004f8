import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TollgateError } from '../src/errors/tollgate-error';
import { formatUsd, InvalidUsageError, price, searchMicros, type Units } from '../src/pricing/price';
import {
  buildPriceTable,
  loadPriceTable,
  PriceTableError,
  SEED_PRICE_TABLE,
  SEED_PRICE_VERSION,
  UnknownPriceError,
  type PriceTableVersion,
} from '../src/pricing/price-table';

const AT = '2026-03-01T12:00:00Z';
const micros = (provider: string, model: string, units: Units, at: Date | string = AT): number =>
  price({ provider, model, units }, { at }).amount_micros;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('seed prices (integer micros)', () => {
  it('prices Gemini Flash text at $0.075 per 1M tokens, input and output', () => {
    expect(micros('gemini', 'gemini-2.0-flash', { input_tokens: 1_000_000 })).toBe(75_000);
    expect(micros('gemini', 'gemini-2.0-flash', { output_tokens: 1_000_000 })).toBe(75_000);
    expect(micros('gemini', 'gemini-2.0-flash', { input_tokens: 1_000_000, cached_input_tokens: 1_000_000 })).toBe(18_750);
  });

  it('prices images and search queries per unit', () => {
    expect(micros('gemini', 'gemini-2.0-flash', { images: 1 })).toBe(250_000);
    expect(micros('deepseek', 'deepseek-vl2', { images: 1 })).toBe(30_000);
    expect(micros('deepseek', 'deepseek-vl2', { images: 7 })).toBe(210_000);
    expect(micros('gemini', 'gemini-2.0-flash', { grounded_prompts: 1 })).toBe(35_000);
    expect(micros('google', 'search-grounding', { search_queries: 3 })).toBe(105_000);
  });

  it('prices grounding in the unit the model bills: per grounded prompt on Gemini 2.x, per query on Gemini 3', () => {
    // Gemini 2.x: one fee per grounded prompt however many queries it ran.
    expect(micros('gemini', 'gemini-2.0-flash', { grounded_prompts: 1, search_queries: 3 })).toBe(35_000);
    expect(micros('gemini', 'gemini-2.5-flash', { grounded_prompts: 1, search_queries: 5 })).toBe(35_000);
    // Gemini 3: $14 per 1,000 queries; the prompt count is not billed.
    expect(micros('gemini', 'gemini-3-flash-preview', { grounded_prompts: 1, search_queries: 3 })).toBe(42_000);
    // A grounded call that ran no search pays no search fee.
    expect(micros('gemini', 'gemini-2.0-flash', { input_tokens: 1000, grounded_prompts: 0, search_queries: 0 })).toBe(75);
    expect(micros('gemini', 'gemini-3-flash-preview', { grounded_prompts: 0, search_queries: 0 })).toBe(0);
    // A model with no grounding price refuses grounding units instead of pricing them at zero.
    expect(() => micros('openai', 'gpt-4o-mini', { grounded_prompts: 1 })).toThrow(UnknownPriceError);
    expect(() => micros('openai', 'gpt-4o-mini', { search_queries: 1 })).toThrow(UnknownPriceError);
  });

  it('reports the search fee of a grounded call on its own', () => {
    const g2 = price({ provider: 'gemini', model: 'gemini-2.0-flash', units: { input_tokens: 1000, output_tokens: 200, grounded_prompts: 1, search_queries: 2 } }, { at: AT });
    expect(searchMicros(g2)).toBe(35_000);
    expect(g2.amount_micros).toBe(35_090);
    const g3 = price({ provider: 'gemini', model: 'gemini-3-flash-preview', units: { input_tokens: 1000, grounded_prompts: 1, search_queries: 2 } }, { at: AT });
    expect(searchMicros(g3)).toBe(28_000);
    expect(searchMicros(price({ provider: 'openai', model: 'gpt-4o-mini', units: { input_tokens: 10 } }, { at: AT }))).toBe(0);
  });

  it.each([
    ['openai', 'gpt-4o-mini', 150_000, 75_000, 600_000],
    ['openai', 'gpt-4o', 2_500_000, 1_250_000, 10_000_000],
    ['openai', 'gpt-4.1-mini', 400_000, 100_000, 1_600_000],
    ['openai', 'o4-mini', 1_100_000, 275_000, 4_400_000],
    ['deepseek', 'deepseek-chat', 280_000, 28_000, 420_000],
    ['deepseek', 'deepseek-reasoner', 280_000, 28_000, 420_000],
  ])('%s/%s: 1M input, cached input, output and reasoning tokens', (provider, model, input, cached, output) => {
    expect(micros(provider, model, { input_tokens: 1_000_000 })).toBe(input);
    expect(micros(provider, model, { input_tokens: 1_000_000, cached_input_tokens: 1_000_000 })).toBe(cached);
    expect(micros(provider, model, { output_tokens: 1_000_000 })).toBe(output);
    // Reasoning defaults to the output rate.
    expect(micros(provider, model, { reasoning_tokens: 1_000_000 })).toBe(output);
  });

  it('prices a mixed gpt-4o-mini call exactly: 1234 in (200 cached) / 567 out', () => {
    const priced = price(
      { provider: 'openai', model: 'gpt-4o-mini', units: { input_tokens: 1234, cached_input_tokens: 200, output_tokens: 567 } },
      { at: AT },
    );
    // 1034 x 0.15 + 200 x 0.075 + 567 x 0.6 = 155.1 + 15 + 340.2 = 510.3 micros
    expect(priced).toEqual({
      amount_micros: 510,
      price_version: '2026-01-01',
      model_key: 'openai/gpt-4o-mini',
      exact_micros_x1e6: '510300000',
      breakdown: {
        input: { units: 1034, rate_micros: 150_000, per: 'mtok', micros_x1e6: '155100000' },
        cached_input: { units: 200, rate_micros: 75_000, per: 'mtok', micros_x1e6: '15000000' },
        output: { units: 567, rate_micros: 600_000, per: 'mtok', micros_x1e6: '340200000' },
      },
    });
  });

  it('prices o4-mini reasoning tokens at the output rate', () => {
    // 1000 x 1.1 + (500 + 2000) x 4.4 = 1100 + 11000
    expect(micros('openai', 'o4-mini', { input_tokens: 1000, output_tokens: 500, reasoning_tokens: 2000 })).toBe(12_100);
  });

  it('prices Gemini with tokens, an image and grounding in one entry', () => {
    // 1000 x 0.075 + 200 x 0.075 + 250000 + 35000
    expect(micros('gemini', 'gemini-2.0-flash', { input_tokens: 1000, output_tokens: 200, images: 1, grounded_prompts: 1 })).toBe(285_090);
  });

  it('is zero for zero usage of a known model', () => {
    expect(price({ provider: 'openai', model: 'gpt-4o', units: {} }, { at: AT })).toMatchObject({ amount_micros: 0, breakdown: {} });
  });

  it('keeps the seed immutable', () => {
    expect(Object.isFrozen(SEED_PRICE_TABLE)).toBe(true);
    expect(Object.isFrozen(SEED_PRICE_TABLE.versions[0]?.models['openai/gpt-4o'])).toBe(true);
    expect(Object.isFrozen(SEED_PRICE_VERSION.models)).toBe(true);
  });
});

describe('rounding: exact sum, rounded once, half-up', () => {
  const table = buildPriceTable([
    {
      version: 'test',
      effective_from: '2020-01-01T00:00:00Z',
      models: {
        'acme/one-per-mtok': { input_per_mtok: 1, output_per_mtok: 1 },
        'acme/half': { input_per_mtok: 500_000, output_per_mtok: 500_000 },
      },
    },
  ]);
  const p = (model: string, units: Units): number => price({ provider: 'acme', model, units }, { table, at: AT }).amount_micros;

  it.each([
    [499_999, 0],
    [500_000, 1],
    [1_499_999, 1],
    [1_500_000, 2],
    [2_500_000, 3],
  ])('%i tokens at 1 micro per Mtok -> %i micros', (tokens, expected) => {
    expect(p('one-per-mtok', { input_tokens: tokens })).toBe(expected);
  });

  it('rounds the total, not each component', () => {
    // 0.5 + 0.5 = 1.0 (per-component half-up would give 2)
    expect(p('half', { input_tokens: 1, output_tokens: 1 })).toBe(1);
    // 0.25 + 0.25 micros = 0.5 -> 1 (per-component rounding would give 0)
    expect(p('one-per-mtok', { input_tokens: 250_000, output_tokens: 250_000 })).toBe(1);
    // Gemini: 4 x 0.075 + 4 x 0.075 = 0.6 -> 1 (per-component: 0 + 0)
    expect(micros('gemini', 'gemini-2.0-flash', { input_tokens: 4, output_tokens: 4 })).toBe(1);
  });

  it('stays exact beyond 2^53 in the intermediate', () => {
    // 9e9 tokens x 10,000,000 = 9e16 micros x 1e-6: over 2^53 before scaling down.
    const priced = price({ provider: 'openai', model: 'gpt-4o', units: { output_tokens: 9_000_000_000 } }, { at: AT });
    expect(priced.exact_micros_x1e6).toBe('90000000000000000');
    expect(priced.amount_micros).toBe(90_000_000_000);
  });
});

describe('price versions', () => {
  const v2: PriceTableVersion = {
    version: '2026-07-01',
    effective_from: '2026-07-01T00:00:00Z',
    models: { 'openai/gpt-4o-mini': { input_per_mtok: 200_000, output_per_mtok: 800_000 } },
  };
  const table = buildPriceTable([v2, SEED_PRICE_VERSION]);

  it('picks the latest version effective at the given time', () => {
    const at = (when: string) => price({ provider: 'openai', model: 'gpt-4o-mini', units: { input_tokens: 1_000_000 } }, { at: when, table });
    expect(at('2026-06-30T23:59:59.999Z')).toMatchObject({ price_version: '2026-01-01', amount_micros: 150_000 });
    expect(at('2026-07-01T00:00:00.000Z')).toMatchObject({ price_version: '2026-07-01', amount_micros: 200_000 });
    expect(at('2027-01-01T00:00:00Z')).toMatchObject({ price_version: '2026-07-01', amount_micros: 200_000 });
  });

  it('accepts a Date and defaults to now', () => {
    jest.useFakeTimers({ now: new Date('2026-08-15T00:00:00Z') });
    try {
      const usage = { provider: 'openai', model: 'gpt-4o-mini', units: { output_tokens: 1_000_000 } };
      expect(price(usage, { table })).toMatchObject({ price_version: '2026-07-01', amount_micros: 800_000 });
      expect(price(usage, { table, at: new Date('2026-02-01T00:00:00Z') })).toMatchObject({ price_version: '2026-01-01', amount_micros: 600_000 });
    } finally {
      jest.useRealTimers();
    }
  });

  it('treats versions as complete lists: a model absent from the newer version is unknown then', () => {
    const err = thrown(() => price({ provider: 'openai', model: 'gpt-4o', units: { input_tokens: 1 } }, { at: '2026-07-02T00:00:00Z', table }));
    expect(err).toBeInstanceOf(UnknownPriceError);
    expect((err as UnknownPriceError).message).toContain('2026-07-01');
  });

  it('has no price before the first version', () => {
    const err = thrown(() => micros('openai', 'gpt-4o', { input_tokens: 1 }, '2025-12-31T23:59:59.999Z'));
    expect(err).toBeInstanceOf(UnknownPriceError);
    expect((err as UnknownPriceError).code).toBe('unknown_price');
  });

  it('rejects duplicate version ids and dates', () => {
    expect((thrown(() => buildPriceTable([SEED_PRICE_VERSION, { ...v2, version: '2026-01-01' }])) as TollgateError).message).toMatch(
      /"2026-01-01" appears twice/,
    );
    expect((thrown(() => buildPriceTable([SEED_PRICE_VERSION, { ...v2, effective_from: SEED_PRICE_VERSION.effective_from }])) as TollgateError).code).toBe(
      'invalid_price_table',
    );
  });
});

describe('model lookup', () => {
  it.each([
    ['openai', 'gpt-4o-mini-2024-07-18', 'openai/gpt-4o-mini'],
    ['openai', 'gpt-4o-2024-08-06', 'openai/gpt-4o'],
    ['openai', 'gpt-4o-mini', 'openai/gpt-4o-mini'],
    ['openai', 'gpt-4.1-mini-2025-04-14', 'openai/gpt-4.1-mini'],
    ['gemini', 'gemini-2.0-flash-001', 'gemini/gemini-2.0-flash'],
    ['deepseek', 'deepseek-chat-latest', 'deepseek/deepseek-chat'],
  ])('%s/%s -> %s', (provider, model, key) => {
    expect(price({ provider, model, units: { input_tokens: 10 } }, { at: AT }).model_key).toBe(key);
  });

  it('prices a dated gpt-4o-mini at gpt-4o-mini rates, not gpt-4o', () => {
    expect(micros('openai', 'gpt-4o-mini-2024-07-18', { input_tokens: 1_000_000 })).toBe(150_000);
  });

  it.each([
    ['openai', 'gpt-5'],
    ['openai', 'gpt-4o-audio-preview'],
    ['openai', 'gpt-4o-minix'],
    ['gemini', 'gemini-2.0-flash-lite'],
    ['anthropic', 'claude-sonnet'],
    ['deepseek', 'gpt-4o'],
  ])('%s/%s is unknown', (provider, model) => {
    const err = thrown(() => micros(provider, model, { input_tokens: 1 }));
    expect(err).toBeInstanceOf(UnknownPriceError);
    expect(err).toBeInstanceOf(TollgateError);
    expect((err as UnknownPriceError).code).toBe('unknown_price');
    expect((err as UnknownPriceError).message).toContain(`"${provider}"`);
    expect((err as UnknownPriceError).message).toContain(`"${model}"`);
  });

  it('refuses to price a unit the model has no rate for, instead of pricing it at zero', () => {
    const images = thrown(() => micros('openai', 'gpt-4o-mini', { input_tokens: 10, images: 1 }));
    expect(images).toBeInstanceOf(UnknownPriceError);
    expect((images as UnknownPriceError).message).toMatch(/No images price for provider "openai" model "gpt-4o-mini"/);
    expect(thrown(() => micros('deepseek', 'deepseek-vl2', { input_tokens: 1 }))).toBeInstanceOf(UnknownPriceError);
    expect(thrown(() => micros('google', 'search-grounding', { output_tokens: 1 }))).toBeInstanceOf(UnknownPriceError);
    // Zero of an unpriced unit is fine.
    expect(micros('openai', 'gpt-4o-mini', { input_tokens: 10, images: 0 })).toBe(2);
  });
});

describe('invalid usage', () => {
  it.each<[string, Record<string, unknown>]>([
    ['negative', { input_tokens: -1 }],
    ['fractional', { output_tokens: 1.5 }],
    ['NaN', { images: Number.NaN }],
    ['infinite', { search_queries: Number.POSITIVE_INFINITY }],
    ['unsafe integer', { input_tokens: 2 ** 53 }],
    ['string', { input_tokens: '10' }],
    ['cached above input', { input_tokens: 10, cached_input_tokens: 11 }],
    ['unknown unit', { input_tokens: 1, audio_tokens: 5 }],
  ])('%s units throw invalid_usage', (_name, units) => {
    const err = thrown(() => price({ provider: 'openai', model: 'gpt-4o', units: units as Units }, { at: AT }));
    expect(err).toBeInstanceOf(InvalidUsageError);
    expect((err as InvalidUsageError).code).toBe('invalid_usage');
  });

  it('names the offending unit', () => {
    expect((thrown(() => micros('openai', 'gpt-4o', { images: -2 })) as Error).message).toBe(
      'Usage unit images must be a non-negative integer, got -2',
    );
  });

  it('rejects a bare local date-time for `at`', () => {
    expect((thrown(() => micros('openai', 'gpt-4o', { input_tokens: 1 }, '2026-03-01T12:00:00')) as TollgateError).code).toBe('invalid_period');
  });
});

describe('loadPriceTable', () => {
  let dir: string;
  const savedEnv = process.env.PRICE_TABLE_FILE;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-prices-'));
    delete process.env.PRICE_TABLE_FILE;
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    if (savedEnv === undefined) delete process.env.PRICE_TABLE_FILE;
    else process.env.PRICE_TABLE_FILE = savedEnv;
  });
  const write = (name: string, content: unknown): string => {
    const file = join(dir, name);
    writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
    return file;
  };
  const nextVersion = {
    version: '2026-04-01',
    effective_from: '2026-04-01T00:00:00Z',
    models: {
      'gemini/gemini-2.0-flash': { input_per_mtok: 100_000, output_per_mtok: 400_000, per_image: 260_000 },
      'openai/gpt-4o-mini': { input_per_mtok: 150_000, output_per_mtok: 600_000 },
    },
  };

  it('is the seed without a file', () => {
    expect(loadPriceTable()).toBe(SEED_PRICE_TABLE);
    expect(loadPriceTable().versions.map((v) => v.version)).toEqual(['2026-01-01']);
  });

  it('adds versions from { versions: [...] } and from a bare array', () => {
    for (const content of [{ versions: [nextVersion] }, [nextVersion]]) {
      const table = loadPriceTable({ file: write('prices.json', content) });
      expect(table.versions.map((v) => v.version)).toEqual(['2026-01-01', '2026-04-01']);
      const usage = { provider: 'gemini', model: 'gemini-2.0-flash', units: { input_tokens: 1_000_000, images: 1 } };
      expect(price(usage, { table, at: '2026-03-31T23:59:59Z' })).toMatchObject({ amount_micros: 325_000, price_version: '2026-01-01' });
      expect(price(usage, { table, at: '2026-04-01T00:00:00Z' })).toMatchObject({ amount_micros: 360_000, price_version: '2026-04-01' });
    }
  });

  it('reads PRICE_TABLE_FILE from the environment', () => {
    process.env.PRICE_TABLE_FILE = write('env.json', [nextVersion]);
    expect(loadPriceTable().versions.map((v) => v.version)).toEqual(['2026-01-01', '2026-04-01']);
  });

  it('rejects a float rate, naming file and field', () => {
    const file = write('float.json', [{ ...nextVersion, models: { 'openai/gpt-4o-mini': { input_per_mtok: 0.15 } } }]);
    const err = thrown(() => loadPriceTable({ file }));
    expect(err).toBeInstanceOf(PriceTableError);
    expect((err as PriceTableError).code).toBe('invalid_price_table');
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain('versions.0.models.openai/gpt-4o-mini.input_per_mtok');
  });

  it.each<[string, unknown, RegExp]>([
    ['not JSON', '{ "versions": [', /is not valid JSON/],
    ['a non-UTC date', [{ ...nextVersion, effective_from: '2026-04-01T00:00:00+02:00' }], /effective_from must be an ISO date-time in UTC/],
    ['a missing date', [{ version: 'x', models: nextVersion.models }], /versions\.0\.effective_from/],
    ['a bad model key', [{ ...nextVersion, models: { 'gpt-4o': { input_per_mtok: 1 } } }], /model keys look like provider\/model/],
    ['a model with no rates', [{ ...nextVersion, models: { 'openai/gpt-4o': {} } }], /at least one rate/],
    ['an unknown rate field', [{ ...nextVersion, models: { 'openai/gpt-4o': { input_per_mtok: 1, input_per_token: 1 } } }], /input_per_token/],
    ['a negative rate', [{ ...nextVersion, models: { 'openai/gpt-4o': { input_per_mtok: -1 } } }], /input_per_mtok/],
    ['no versions', { versions: [] }, /versions/],
    ['the seed version id again', [{ ...nextVersion, version: '2026-01-01' }], /"2026-01-01" appears twice/],
  ])('rejects %s', (_name, content, message) => {
    const file = write('bad.json', content);
    const err = thrown(() => loadPriceTable({ file }));
    expect(err).toBeInstanceOf(PriceTableError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(message);
  });

  it('rejects a missing file', () => {
    const file = join(dir, 'nope.json');
    expect((thrown(() => loadPriceTable({ file })) as Error).message).toMatch(new RegExp(`Cannot read price table file ${file}`));
  });
});

describe('formatUsd', () => {
  it.each([
    [30_000, '0.030000'],
    [-1_500_000, '-1.500000'],
    [0, '0.000000'],
    [1, '0.000001'],
    [-5, '-0.000005'],
    [250_000, '0.250000'],
    [1_000_000_000, '1000.000000'],
    [Number.MAX_SAFE_INTEGER, '9007199254.740991'],
  ])('%i micros -> %s', (input, expected) => {
    expect(formatUsd(input)).toBe(expected);
  });

  it('refuses non-integers', () => {
    expect((thrown(() => formatUsd(0.5)) as TollgateError).code).toBe('invalid_amount');
  });
});

describe('external operations', () => {
  const table = buildPriceTable([
    { ...SEED_PRICE_VERSION, models: { ...SEED_PRICE_VERSION.models, 'acme/both': { per_call: 7, per_unit: 2, per_1k_units: 1_001 } } },
  ]);

  test('per call, per unit and per 1,000 units, exact and rounded once', () => {
    expect(micros('google', 'places-text-search', { calls: 3, quantity: 60 })).toBe(96_000);
    expect(micros('google', 'custom-search', { calls: 1, quantity: 7 })).toBe(35_000);
    // YouTube bills quota, not money: units are recorded at no cost.
    const yt = price({ provider: 'youtube', model: 'search', units: { calls: 1, quantity: 100 } }, { at: AT });
    expect(yt.amount_micros).toBe(0);
    expect(yt.breakdown.quantity).toEqual({ units: 100, rate_micros: 0, per: 'unit', micros_x1e6: '0' });
    // 2 calls x 7 + 3 units x 2 + 3 x 1001 / 1000 = 20 + 3.003 -> 23
    expect(price({ provider: 'acme', model: 'both', units: { calls: 2, quantity: 3 } }, { at: AT, table }).amount_micros).toBe(23);
    expect(price({ provider: 'acme', model: 'both', units: { calls: 0, quantity: 500 } }, { at: AT, table }).amount_micros).toBe(1_501);
  });

  test('and a model reporting calls or quantity is unpriced, never free', () => {
    expect(thrown(() => micros('openai', 'gpt-4o', { calls: 1 }))).toBeInstanceOf(UnknownPriceError);
    expect(thrown(() => micros('openai', 'gpt-4o', { quantity: 1 }))).toBeInstanceOf(UnknownPriceError);
  });
});
