import { MalformedResponseError } from '../errors/provider-errors';

// By name: the parse may run in another realm (Node's fetch internals), where instanceof fails.
const isSyntaxError = (e: unknown) => typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'SyntaxError';

/**
 * A body the SDK could not parse is the provider's fault, not a bug of ours: it must fall back
 * like a 5xx rather than surface as an internal error.
 */
export async function guardMalformed<T>(provider: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (isSyntaxError(error)) throw new MalformedResponseError(`${provider} sent a body that is not valid JSON`, { cause: error });
    throw error;
  }
}

export async function* guardMalformedStream<T>(provider: string, stream: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* stream;
  } catch (error) {
    if (isSyntaxError(error)) throw new MalformedResponseError(`${provider} sent a stream chunk that is not valid JSON`, { cause: error });
    throw error;
  }
}
