import { type ModelPrice, type PriceTable, providerForModel, resolveModelPrice, selectPriceVersion } from '@tollgate/shared';
import { ApiError } from './errors';

/** What a model must be priced for to be used for an operation. */
const NEEDS: Record<'chat' | 'vision', Array<keyof ModelPrice>> = {
  chat: ['input_per_mtok', 'output_per_mtok'],
  vision: ['per_image'],
};

function priced(table: PriceTable, model: string, operation: 'chat' | 'vision'): boolean {
  const provider = providerForModel(model);
  if (!provider) return false;
  try {
    const { price } = resolveModelPrice(selectPriceVersion(table, new Date()), provider, model);
    return NEEDS[operation].every((unit) => price[unit] !== undefined);
  } catch {
    return false;
  }
}

/**
 * A requested model must belong to a provider and be priced for the operation: a call we could
 * not price would be a call we could not bill, so it is refused before any work is queued.
 */
export function checkModel(model: string | undefined, table: PriceTable, operation: 'chat' | 'vision'): void {
  if (model === undefined || priced(table, model, operation)) return;
  const known = Object.keys(selectPriceVersion(table, new Date()).models)
    .map((key) => key.slice(key.indexOf('/') + 1))
    .filter((m) => priced(table, m, operation));
  throw new ApiError('invalid_request', `Unknown or unpriced ${operation} model "${model}". Available: ${known.join(', ')}.`);
}
