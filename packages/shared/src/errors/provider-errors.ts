import { TollgateError } from './tollgate-error';

export interface TollgateErrorOptions {
  details?: unknown;
  cause?: unknown;
}

/** A provider's safety filter refused the prompt or the answer. */
export class ContentBlockedError extends TollgateError {
  constructor(message = 'Content was blocked by a safety filter', options?: TollgateErrorOptions) {
    super('content_blocked', message, options);
  }
}

/** The caller's deadline passed before the work finished. */
export class DeadlineExceededError extends TollgateError {
  constructor(message = 'Deadline exceeded', options?: TollgateErrorOptions) {
    super('deadline_exceeded', message, options);
  }
}

/** A breaker refused the call without trying it; `breaker` is its `${provider}:${operation}` key. */
export class CircuitOpenError extends TollgateError {
  readonly breaker: string;

  constructor(breaker: string, options?: TollgateErrorOptions) {
    super('circuit_open', `Circuit ${breaker} is open`, options);
    this.breaker = breaker;
  }
}

/** The provider could not serve the call (5xx, overloaded, no usable endpoint). */
export class ProviderUnavailableError extends TollgateError {
  constructor(message = 'Provider unavailable', options?: TollgateErrorOptions) {
    super('provider_unavailable', message, options);
  }
}

/** The provider answered, but with something we cannot use (bad JSON, missing fields). */
export class MalformedResponseError extends TollgateError {
  constructor(message = 'Provider returned a malformed response', options?: TollgateErrorOptions) {
    super('provider_malformed_response', message, options);
  }
}
