import { TollgateError } from '../errors/tollgate-error';
import { toUtcDate } from '../time/periods';
import {
  isExternal,
  type PriceTable,
  SEED_PRICE_TABLE,
  UnknownPriceError,
  resolveModelPrice,
  selectPriceVersion,
} from './price-table';

/** Billable units of one provider call. */
export interface Units {
  /** All prompt tokens, cached ones included. */
  input_tokens?: number;
  /** The part of input_tokens served from the provider's prompt cache. */
  cached_input_tokens?: number;
  /** Visible output only; reasoning tokens are counted separately. */
  output_tokens?: number;
  reasoning_tokens?: number;
  images?: number;
  /** Calls that ran at least one Google Search (0 or 1 per call). */
  grounded_prompts?: number;
  /** Unique non-empty search queries the call ran. */
  search_queries?: number;
  /** External operations: calls made, and units in the operation's own measure (results, queries, quota units). */
  calls?: number;
  quantity?: number;
}

export interface UsageToPrice {
  provider: string;
  model: string;
  units: Units;
}

export type PriceComponent = 'input' | 'cached_input' | 'output' | 'reasoning' | 'images' | 'grounded_prompts' | 'search_queries' | 'calls' | 'quantity';

/** The components that are the search fee of a grounded call. */
export const SEARCH_COMPONENTS: readonly PriceComponent[] = ['grounded_prompts', 'search_queries'];

export interface PriceLine {
  units: number;
  rate_micros: number;
  per: 'mtok' | 'unit' | 'k';
  /** Exact, unrounded amount in micro-dollars x 1e-6, as a decimal string (can exceed 2^53). */
  micros_x1e6: string;
}

export interface PricedUsage {
  /** Total rounded once, half-up, to integer micro-dollars. */
  amount_micros: number;
  price_version: string;
  /** The price-table key used, e.g. "openai/gpt-4o-mini" for model "gpt-4o-mini-2024-07-18". */
  model_key: string;
  /** Exact total before rounding, micro-dollars x 1e-6. */
  exact_micros_x1e6: string;
  /** Only components with non-zero units; "input" is the uncached part of input_tokens. */
  breakdown: Partial<Record<PriceComponent, PriceLine>>;
}

export class InvalidUsageError extends TollgateError {
  constructor(message: string, details?: unknown) {
    super('invalid_usage', message, { details });
  }
}

const UNIT_KEYS = [
  'input_tokens',
  'cached_input_tokens',
  'output_tokens',
  'reasoning_tokens',
  'images',
  'grounded_prompts',
  'search_queries',
  'calls',
  'quantity',
] as const satisfies readonly (keyof Units)[];

const MICRO_SCALE = 1_000_000n;

function readUnits(units: unknown): Required<Units> {
  if (!units || typeof units !== 'object' || Array.isArray(units)) {
    throw new InvalidUsageError('Usage units must be an object');
  }
  const record = units as Record<string, unknown>;
  // An unknown unit (say audio_tokens) would otherwise be priced at zero without anyone noticing.
  const unknown = Object.keys(record).filter((k) => !(UNIT_KEYS as readonly string[]).includes(k) && record[k] !== undefined);
  if (unknown.length) throw new InvalidUsageError(`Unknown usage units: ${unknown.join(', ')}`, { units: unknown });

  const out = {} as Required<Units>;
  for (const key of UNIT_KEYS) {
    const value = record[key] ?? 0;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      throw new InvalidUsageError(`Usage unit ${key} must be a non-negative integer, got ${String(value)}`, { unit: key });
    }
    out[key] = value;
  }
  if (out.cached_input_tokens > out.input_tokens) {
    throw new InvalidUsageError(
      `cached_input_tokens (${out.cached_input_tokens}) exceeds input_tokens (${out.input_tokens})`,
      { cached_input_tokens: out.cached_input_tokens, input_tokens: out.input_tokens },
    );
  }
  return out;
}

/**
 * Prices one provider call. Components are summed exactly (BigInt, micro-dollars x 1e-6) and the
 * total is rounded once, half-up, so an entry never carries per-component rounding drift.
 */
export function price(usage: UsageToPrice, opts: { at?: Date | string; table?: PriceTable } = {}): PricedUsage {
  const { provider, model } = usage;
  if (typeof provider !== 'string' || !provider || typeof model !== 'string' || !model) {
    throw new InvalidUsageError('Usage needs a non-empty provider and model');
  }
  const units = readUnits(usage.units);
  const version = selectPriceVersion(opts.table ?? SEED_PRICE_TABLE, toUtcDate(opts.at ?? new Date()));
  const { model_key, price: rates } = resolveModelPrice(version, provider, model);

  const components: { component: PriceComponent; units: number; rate: number | undefined; per: 'mtok' | 'unit' | 'k' }[] = [
    { component: 'input', units: units.input_tokens - units.cached_input_tokens, rate: rates.input_per_mtok, per: 'mtok' },
    {
      component: 'cached_input',
      units: units.cached_input_tokens,
      rate: rates.cached_input_per_mtok ?? rates.input_per_mtok,
      per: 'mtok',
    },
    { component: 'output', units: units.output_tokens, rate: rates.output_per_mtok, per: 'mtok' },
    { component: 'reasoning', units: units.reasoning_tokens, rate: rates.reasoning_per_mtok ?? rates.output_per_mtok, per: 'mtok' },
    { component: 'images', units: units.images, rate: rates.per_image, per: 'unit' },
    // One search unit per model: a model billed per grounded prompt does not also bill its queries.
    ...(rates.per_grounded_prompt !== undefined
      ? [{ component: 'grounded_prompts' as const, units: units.grounded_prompts, rate: rates.per_grounded_prompt, per: 'unit' as const }]
      : [
          { component: 'search_queries' as const, units: units.search_queries, rate: rates.per_search_query, per: 'unit' as const },
          // Counted by every grounded call; billed only where the table prices prompts.
          ...(rates.per_search_query !== undefined ? [] : [{ component: 'grounded_prompts' as const, units: units.grounded_prompts, rate: undefined, per: 'unit' as const }]),
        ]),
    // An external operation is billed per call, per unit or per 1,000 units; the measures it has
    // no rate for are recorded at no cost. Anything else reporting calls or quantity is unpriced.
    { component: 'calls', units: units.calls, rate: rates.per_call ?? (isExternal(rates) ? 0 : undefined), per: 'unit' },
    ...(rates.per_1k_units !== undefined
      ? [{ component: 'quantity' as const, units: units.quantity, rate: rates.per_1k_units, per: 'k' as const }]
      : []),
    ...(rates.per_unit !== undefined || rates.per_1k_units === undefined
      ? [{ component: 'quantity' as const, units: units.quantity, rate: rates.per_unit ?? (isExternal(rates) ? 0 : undefined), per: 'unit' as const }]
      : []),
  ];

  let total = 0n;
  const breakdown: PricedUsage['breakdown'] = {};
  for (const c of components) {
    if (c.units === 0) continue;
    if (c.rate === undefined) {
      throw new UnknownPriceError(
        `No ${c.component} price for provider "${provider}" model "${model}" (${model_key}) in price version ${version.version}`,
        { provider, model, model_key, component: c.component, price_version: version.version },
      );
    }
    // Token rates are per 1M tokens, so tokens x rate is already micros x 1e-6; per-unit rates need scaling.
    const amount = BigInt(c.units) * BigInt(c.rate) * (c.per === 'unit' ? MICRO_SCALE : c.per === 'k' ? 1_000n : 1n);
    total += amount;
    const prior = breakdown[c.component];
    // A quantity priced both per unit and per 1,000: one line whose rate is the per-unit one, amount the sum.
    breakdown[c.component] = prior
      ? { ...prior, micros_x1e6: (BigInt(prior.micros_x1e6) + amount).toString() }
      : { units: c.units, rate_micros: c.rate, per: c.per, micros_x1e6: amount.toString() };
  }

  const rounded = (total + MICRO_SCALE / 2n) / MICRO_SCALE;
  if (rounded > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidUsageError(`Priced amount ${rounded} micros exceeds the safe integer range`);
  }
  return {
    amount_micros: Number(rounded),
    price_version: version.version,
    model_key,
    exact_micros_x1e6: total.toString(),
    breakdown,
  };
}

/** Exact decimal dollars with 6 places, from integer micros; never goes through a float. */
/** The search fee inside a priced call (grounding), in micro-dollars; per-unit rates make it exact. */
export function searchMicros(priced: PricedUsage): number {
  let exact = 0n;
  for (const c of SEARCH_COMPONENTS) exact += BigInt(priced.breakdown[c]?.micros_x1e6 ?? '0');
  return Number((exact + MICRO_SCALE / 2n) / MICRO_SCALE);
}

export function formatUsd(micros: number): string {
  if (!Number.isSafeInteger(micros)) {
    throw new TollgateError('invalid_amount', `formatUsd needs an integer number of micros, got ${String(micros)}`);
  }
  const value = BigInt(micros);
  const abs = value < 0n ? -value : value;
  const whole = abs / MICRO_SCALE;
  const frac = (abs % MICRO_SCALE).toString().padStart(6, '0');
  return `${value < 0n ? '-' : ''}${whole}.${frac}`;
}
