/**
 * The provider SDKs' error classes, for the classifier's `instanceof` checks, registered by the
 * modules that load those SDKs (./openai-errors, ./google-errors; the provider clients import
 * them). A provider's errors can only exist in a process that loaded its SDK, so the classifier
 * never imports an SDK itself, and services that call no provider (gateway, cost-ledger,
 * alerting) never load openai or @google/genai.
 */

/** A class, as far as `instanceof` needs it. */
export type ErrorClass<T extends Error> = abstract new (...args: never[]) => T;

/** What the classifier reads from OpenAI's APIError (and the OpenAI-compatible DeepSeek's). */
export interface OpenAiApiErrorLike extends Error {
  readonly status?: unknown;
  readonly code?: string | null;
  readonly type?: string | null;
  readonly error?: unknown;
}

export interface OpenAiErrorClasses {
  APIError: ErrorClass<OpenAiApiErrorLike>;
  /** Subclasses of APIError, checked before it. */
  APIConnectionError: ErrorClass<OpenAiApiErrorLike>;
  APIConnectionTimeoutError: ErrorClass<OpenAiApiErrorLike>;
  APIUserAbortError: ErrorClass<OpenAiApiErrorLike>;
  ContentFilterFinishReasonError: ErrorClass<Error>;
}

export interface GoogleApiErrorLike extends Error {
  readonly status: number;
}

export interface GoogleErrorClasses {
  ApiError: ErrorClass<GoogleApiErrorLike>;
}

interface Registry {
  openai?: OpenAiErrorClasses;
  google?: GoogleErrorClasses;
}

const registry: Registry = {};

export function registerOpenAiErrors(classes: OpenAiErrorClasses): void {
  registry.openai = classes;
}

export function registerGoogleErrors(classes: GoogleErrorClasses): void {
  registry.google = classes;
}

/** OpenAI's error classes once the SDK is loaded; undefined before (no error of it can exist yet). */
export function openAiErrorClasses(): OpenAiErrorClasses | undefined {
  return registry.openai;
}

/** @google/genai's error classes once the SDK is loaded. */
export function googleErrorClasses(): GoogleErrorClasses | undefined {
  return registry.google;
}
