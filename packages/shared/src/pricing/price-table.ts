import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { TollgateError } from '../errors/tollgate-error';

/** Rates in integer micro-dollars: per 1M tokens, per image, per search query. A missing rate means "not priced", never zero. */
export interface ModelPrice {
  input_per_mtok?: number;
  /** Falls back to input_per_mtok. */
  cached_input_per_mtok?: number;
  output_per_mtok?: number;
  /** Falls back to output_per_mtok. */
  reasoning_per_mtok?: number;
  per_image?: number;
  /**
   * Google Search grounding is billed in one of two units, and the model's price says which: per
   * grounded prompt (a call that ran at least one search; Gemini 2.x) or per unique non-empty search
   * query (Gemini 3). A model with `per_grounded_prompt` bills its prompts and not its queries.
   */
  per_grounded_prompt?: number;
  per_search_query?: number;
  /**
   * External operations (a metered API an application calls itself, reported through
   * `/v1/usage`): per call, per operation-defined unit (results, quota units) and per 1,000 units.
   * A price with any of these is an external operation; `per_unit: 0` records units at no cost
   * (YouTube's quota units).
   */
  per_call?: number;
  per_unit?: number;
  per_1k_units?: number;
}

/** An external operation: a metered API the application calls itself and reports through `/v1/usage`. */
export function isExternal(p: ModelPrice): boolean {
  return p.per_call !== undefined || p.per_unit !== undefined || p.per_1k_units !== undefined;
}

/**
 * One complete price list. Versions do not inherit from each other: a version id names every rate
 * an entry could have used, so a ledger entry's `price_version` alone reproduces its amount.
 */
export interface PriceTableVersion {
  version: string;
  /** ISO date-time in UTC (`...Z`). */
  effective_from: string;
  /** Keyed by `${provider}/${model}`. */
  models: Record<string, ModelPrice>;
}

/** Versions sorted by effective_from, oldest first. */
export interface PriceTable {
  readonly versions: readonly PriceTableVersion[];
}

export class UnknownPriceError extends TollgateError {
  constructor(message: string, details?: unknown) {
    super('unknown_price', message, { details });
  }
}

export class PriceTableError extends TollgateError {
  constructor(message: string, details?: unknown) {
    super('invalid_price_table', message, { details });
  }
}

const rate = z.int().nonnegative();

export const ModelPriceSchema = z
  .strictObject({
    input_per_mtok: rate.optional(),
    cached_input_per_mtok: rate.optional(),
    output_per_mtok: rate.optional(),
    reasoning_per_mtok: rate.optional(),
    per_image: rate.optional(),
    per_grounded_prompt: rate.optional(),
    per_search_query: rate.optional(),
    per_call: rate.optional(),
    per_unit: rate.optional(),
    per_1k_units: rate.optional(),
  })
  .refine((p) => Object.values(p).some((v) => v !== undefined), { error: 'a model needs at least one rate' });

export const PriceTableVersionSchema = z.strictObject({
  version: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, { error: 'version must be 1-64 characters of A-Z a-z 0-9 . _ : -' }),
  effective_from: z.iso.datetime({ error: 'effective_from must be an ISO date-time in UTC, e.g. 2026-01-01T00:00:00Z' }),
  models: z.record(
    z.string().regex(/^[a-z0-9][a-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._:-]*$/),
    ModelPriceSchema,
    { error: (issue) => (issue.code === 'invalid_key' ? 'model keys look like provider/model' : undefined) },
  ),
});

/** An override file holds either an array of versions or `{ "versions": [...] }`. */
export const PriceTableFileSchema = z.strictObject({
  versions: z.array(PriceTableVersionSchema).min(1),
});

export const SEED_PRICE_VERSION: PriceTableVersion = {
  version: '2026-01-01',
  effective_from: '2026-01-01T00:00:00Z',
  models: {
    // The product's cost table gives one text rate for Gemini Flash, so input and output share it.
    'gemini/gemini-2.0-flash': {
      input_per_mtok: 75_000,
      cached_input_per_mtok: 18_750,
      output_per_mtok: 75_000,
      per_image: 250_000,
      // Gemini 2.x grounding: $35 per 1,000 grounded prompts, whatever the number of queries.
      per_grounded_prompt: 35_000,
    },
    'gemini/gemini-2.5-flash': { input_per_mtok: 300_000, cached_input_per_mtok: 30_000, output_per_mtok: 2_500_000, per_grounded_prompt: 35_000 },
    // Gemini 3 grounding: $14 per 1,000 search queries (unique and non-empty, counted per call).
    'gemini/gemini-3-flash-preview': { input_per_mtok: 500_000, cached_input_per_mtok: 50_000, output_per_mtok: 3_000_000, per_search_query: 14_000 },
    'google/search-grounding': { per_search_query: 35_000 },
    'deepseek/deepseek-vl2': { per_image: 30_000 },
    'deepseek/deepseek-chat': { input_per_mtok: 280_000, cached_input_per_mtok: 28_000, output_per_mtok: 420_000 },
    'deepseek/deepseek-reasoner': { input_per_mtok: 280_000, cached_input_per_mtok: 28_000, output_per_mtok: 420_000 },
    'openai/gpt-4o-mini': { input_per_mtok: 150_000, cached_input_per_mtok: 75_000, output_per_mtok: 600_000 },
    'openai/gpt-4o': { input_per_mtok: 2_500_000, cached_input_per_mtok: 1_250_000, output_per_mtok: 10_000_000 },
    'openai/gpt-4.1-mini': { input_per_mtok: 400_000, cached_input_per_mtok: 100_000, output_per_mtok: 1_600_000 },
    'openai/o4-mini': { input_per_mtok: 1_100_000, cached_input_per_mtok: 275_000, output_per_mtok: 4_400_000 },
    // External operations, reported by applications through /v1/usage (Google's list prices, Dec 2026).
    // YouTube Data API search costs no money but 100 quota units a call: recorded, priced 0.
    'youtube/search': { per_unit: 0 },
    // Custom Search JSON API: $5 per 1,000 queries.
    'google/custom-search': { per_1k_units: 5_000_000 },
    // Places API Text Search (Pro): $32 per 1,000 requests.
    'google/places-text-search': { per_call: 32_000 },
  },
};

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** Builds a table from versions: validated, sorted, and rejecting duplicate ids or dates (either would make a recorded version ambiguous). */
export function buildPriceTable(versions: readonly PriceTableVersion[]): PriceTable {
  const parsed = z.array(PriceTableVersionSchema).min(1).safeParse(versions);
  if (!parsed.success) {
    throw new PriceTableError(`Invalid price table: ${formatIssues(parsed.error)}`, parsed.error.issues);
  }
  const sorted = [...parsed.data].sort((a, b) => Date.parse(a.effective_from) - Date.parse(b.effective_from));
  const ids = new Set<string>();
  const dates = new Set<number>();
  for (const v of sorted) {
    if (ids.has(v.version)) throw new PriceTableError(`Invalid price table: version "${v.version}" appears twice`);
    const at = Date.parse(v.effective_from);
    if (dates.has(at)) throw new PriceTableError(`Invalid price table: two versions take effect at ${v.effective_from}`);
    ids.add(v.version);
    dates.add(at);
  }
  return deepFreeze({ versions: sorted });
}

deepFreeze(SEED_PRICE_VERSION);
export const SEED_PRICE_TABLE: PriceTable = buildPriceTable([SEED_PRICE_VERSION]);

function formatIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
}

/**
 * The seed table plus the versions in an override file (opts.file, else env PRICE_TABLE_FILE).
 * A missing, unparsable or invalid file throws PriceTableError rather than silently pricing with the seed.
 */
export function loadPriceTable(opts: { file?: string } = {}): PriceTable {
  const file = opts.file ?? process.env.PRICE_TABLE_FILE;
  if (!file) return SEED_PRICE_TABLE;

  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PriceTableError(`Cannot read price table file ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PriceTableError(`Price table file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = PriceTableFileSchema.safeParse(Array.isArray(json) ? { versions: json } : json);
  if (!parsed.success) {
    throw new PriceTableError(`Price table file ${file} is invalid: ${formatIssues(parsed.error)}`, parsed.error.issues);
  }
  try {
    return buildPriceTable([...SEED_PRICE_TABLE.versions, ...parsed.data.versions]);
  } catch (err) {
    throw new PriceTableError(`Price table file ${file} is invalid: ${(err as Error).message}`);
  }
}

/** The latest version whose effective_from <= at. */
export function selectPriceVersion(table: PriceTable, at: Date): PriceTableVersion {
  const t = at.getTime();
  let chosen: PriceTableVersion | undefined;
  for (const v of table.versions) {
    if (Date.parse(v.effective_from) <= t) chosen = v;
    else break;
  }
  if (!chosen) {
    throw new UnknownPriceError(`No price version is in effect at ${at.toISOString()}`, { at: at.toISOString() });
  }
  return chosen;
}

// Suffixes providers add to pin a snapshot: dates (2024-07-18, 20240718), build numbers (001, 0125), "latest".
// Anything else (gpt-4o-audio-preview, gemini-2.0-flash-lite) is a different product with different prices.
const SNAPSHOT_SUFFIX = /^(\d{4}-\d{2}-\d{2}|\d{8}|\d{2,4}|latest)$/;

/** Exact `${provider}/${model}`, else the longest known base model that `model` is a dated snapshot of. */
export function resolveModelPrice(
  version: PriceTableVersion,
  provider: string,
  model: string,
): { model_key: string; price: ModelPrice } {
  const exactKey = `${provider}/${model}`;
  const exact = version.models[exactKey];
  if (exact) return { model_key: exactKey, price: exact };

  let best: { model_key: string; price: ModelPrice } | undefined;
  let bestLength = -1;
  const providerPrefix = `${provider}/`;
  for (const [key, price] of Object.entries(version.models)) {
    if (!key.startsWith(providerPrefix)) continue;
    const base = key.slice(providerPrefix.length);
    if (base.length <= bestLength || !model.startsWith(`${base}-`)) continue;
    if (!SNAPSHOT_SUFFIX.test(model.slice(base.length + 1))) continue;
    best = { model_key: key, price };
    bestLength = base.length;
  }
  if (best) return best;
  throw new UnknownPriceError(
    `No price for provider "${provider}" model "${model}" in price version ${version.version}`,
    { provider, model, price_version: version.version },
  );
}
