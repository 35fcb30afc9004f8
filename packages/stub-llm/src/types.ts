export type Provider = 'openai' | 'deepseek' | 'gemini';
export const PROVIDERS: readonly Provider[] = ['openai', 'deepseek', 'gemini'];

export type FaultKind = '429' | '500' | '503' | 'hang' | 'malformed';
export const FAULT_KINDS: readonly FaultKind[] = ['429', '500', '503', 'hang', 'malformed'];

export interface FaultRates {
  /** Fixed added latency before any answer (faults included). */
  latencyMs?: number;
  /** Uniform extra latency in 0..latencyJitterMs. */
  latencyJitterMs?: number;
  rate429?: number;
  rate500?: number;
  rate503?: number;
  hangRate?: number;
  malformedRate?: number;
  /** Seconds in `retry-after` on 429s (default 1); `retry-after-ms` carries the same in ms. */
  retryAfterSeconds?: number;
}

export interface ScriptedFault {
  /** Only requests to this provider match; any provider when absent. */
  provider?: Provider;
  fault: FaultKind;
  times: number;
}

export interface FaultConfig extends FaultRates {
  /** Per-provider overrides; a field set here wins over the top-level one. */
  providers?: Partial<Record<Provider, FaultRates>>;
  /** The next `times` matching requests get `fault`, entries consumed in order, before any rate applies. */
  script?: ScriptedFault[];
  /** Seed for the rate draws, so a run with rates is reproducible. */
  seed?: number;
}

export interface BilledUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  images: number;
  /** Google Search queries run by grounded Gemini calls. */
  searchQueries: number;
  /** Grounded Gemini calls that ran at least one search. */
  groundedPrompts: number;
}

export interface ModelStats {
  provider: Provider;
  model: string;
  /** Every request naming this provider+model, whatever its outcome. */
  requests: number;
  /** Answered in full with a normal reply; exactly these are billed. */
  successes: number;
  /** Rejected with 400/401 (not faults, not billed). */
  rejected: number;
  /** Client went away before the reply was complete (not billed). */
  aborted: number;
  faults: Record<FaultKind, number>;
  billed: BilledUsage;
}

export interface StubStats {
  /** All requests to model routes, including ones rejected before a model was known. */
  totalRequests: number;
  /** provider -> model -> stats */
  byProvider: Record<Provider, Record<string, ModelStats>>;
  /** Sums over byProvider. */
  totals: {
    requests: number;
    successes: number;
    rejected: number;
    aborted: number;
    faults: Record<FaultKind, number>;
    billed: BilledUsage;
  };
}

/**
 * One billed call in the opt-in call log. A ledger prices every call on its own and rounds per
 * call, so only the calls themselves (not aggregate tokens) can be priced back to its total; `ask`
 * ties each call to the request that caused it.
 */
export interface BilledCall {
  /** Epoch ms when the reply was handed to the socket, i.e. when it was billed. */
  at: number;
  provider: Provider;
  model: string;
  promptTokens: number;
  completionTokens: number;
  images: number;
  /** SHA-256 (hex) of the last user message's text. */
  ask: string;
}

export interface StubOptions {
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  faults?: FaultConfig;
  /** Keep every billed call for `billedCalls()` / `GET /_stub/calls` (off by default: it grows with each call). */
  callLog?: boolean;
  /** Silences the stderr notes about admin changes and internal errors. */
  quiet?: boolean;
}

export interface StubServer {
  /** http://HOST:PORT, no trailing slash. */
  url: string;
  port: number;
  stats(): StubStats;
  /** Every billed call since the last reset, oldest first (also `GET /_stub/calls`); empty unless `callLog` is on. */
  billedCalls(): BilledCall[];
  resetStats(): void;
  /** Replaces the whole fault configuration and restarts its script and random sequence. */
  setFaults(faults: FaultConfig): void;
  /** Stops listening and destroys every open connection, hung ones included. */
  close(): Promise<void>;
}
