import { FAULT_KINDS, PROVIDERS, type FaultConfig, type FaultKind, type FaultRates, type Provider, type ScriptedFault } from './types';

export interface FaultDecision {
  fault: FaultKind | null;
  latencyMs: number;
  retryAfterSeconds: number;
}

export interface ForcedFault {
  fault?: FaultKind;
  latencyMs?: number;
}

const DEFAULT_RETRY_AFTER_SECONDS = 1;

const RATE_FIELDS: ReadonlyArray<readonly [keyof FaultRates, FaultKind]> = [
  ['rate429', '429'],
  ['rate500', '500'],
  ['rate503', '503'],
  ['hangRate', 'hang'],
  ['malformedRate', 'malformed'],
];

/** mulberry32: tiny seeded PRNG, enough for reproducible fault draws. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultPlanner {
  private config: FaultConfig = {};
  private script: Array<ScriptedFault & { remaining: number }> = [];
  private random: () => number = Math.random;

  constructor(config: FaultConfig = {}) {
    this.set(config);
  }

  set(config: FaultConfig): void {
    this.config = config;
    this.script = (config.script ?? []).map((s) => ({ ...s, remaining: s.times }));
    this.random = seededRandom(config.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  current(): FaultConfig {
    return this.config;
  }

  /** Picks this request's fate: a forced header wins, then the script, then the rates. */
  decide(provider: Provider, forced: ForcedFault | null): FaultDecision {
    const rates: FaultRates = { ...this.config, ...this.config.providers?.[provider] };
    let latencyMs = rates.latencyMs ?? 0;
    if (rates.latencyJitterMs) latencyMs += this.random() * rates.latencyJitterMs;
    if (forced?.latencyMs !== undefined) latencyMs = forced.latencyMs;
    const retryAfterSeconds = rates.retryAfterSeconds ?? DEFAULT_RETRY_AFTER_SECONDS;

    if (forced?.fault) return { fault: forced.fault, latencyMs, retryAfterSeconds };

    const step = this.script.find((s) => s.remaining > 0 && (s.provider === undefined || s.provider === provider));
    if (step) {
      step.remaining--;
      return { fault: step.fault, latencyMs, retryAfterSeconds };
    }

    return { fault: this.drawRate(rates), latencyMs, retryAfterSeconds };
  }

  private drawRate(rates: FaultRates): FaultKind | null {
    if (!RATE_FIELDS.some(([field]) => (rates[field] ?? 0) > 0)) return null;
    const u = this.random();
    let edge = 0;
    for (const [field, kind] of RATE_FIELDS) {
      edge += rates[field] ?? 0;
      if (u < edge) return kind;
    }
    return null;
  }
}

/** Parses `x-stub-fault`: a comma list of 429|500|503|hang|malformed|latency=<ms>. */
export function parseFaultHeader(value: string): ForcedFault {
  const forced: ForcedFault = {};
  for (const raw of value.split(',')) {
    const token = raw.trim();
    if (token === '') continue;
    const latency = /^latency=(\d+(?:\.\d+)?)$/.exec(token);
    if (latency?.[1] !== undefined) forced.latencyMs = Number(latency[1]);
    else if (isFaultKind(token)) forced.fault = token;
    else throw new Error(`x-stub-fault: unknown value "${token}" (use ${FAULT_KINDS.join('|')}|latency=<ms>)`);
  }
  return forced;
}

function isFaultKind(value: unknown): value is FaultKind {
  return typeof value === 'string' && (FAULT_KINDS as readonly string[]).includes(value);
}

function isProvider(value: unknown): value is Provider {
  return typeof value === 'string' && (PROVIDERS as readonly string[]).includes(value);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readRates(input: Record<string, unknown>, where: string): FaultRates {
  const rates: FaultRates = {};
  const nonNegative = (key: 'latencyMs' | 'latencyJitterMs' | 'retryAfterSeconds'): void => {
    const v = input[key];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`${where}${key} must be a number >= 0`);
    rates[key] = v;
  };
  nonNegative('latencyMs');
  nonNegative('latencyJitterMs');
  nonNegative('retryAfterSeconds');
  for (const [key] of RATE_FIELDS) {
    const v = input[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new Error(`${where}${key} must be a probability in 0..1`);
    rates[key] = v;
  }
  return rates;
}

/** Validates untrusted JSON (admin route, STUB_FAULTS) into a FaultConfig; throws with a readable message. */
export function parseFaultConfig(input: unknown): FaultConfig {
  if (!isRecord(input)) throw new Error('fault config must be a JSON object');
  const known = new Set(['latencyMs', 'latencyJitterMs', 'retryAfterSeconds', 'providers', 'script', 'seed', ...RATE_FIELDS.map(([f]) => f)]);
  for (const key of Object.keys(input)) if (!known.has(key)) throw new Error(`unknown fault config field "${key}"`);

  const config: FaultConfig = readRates(input, '');
  if (input.seed !== undefined) {
    if (typeof input.seed !== 'number' || !Number.isInteger(input.seed)) throw new Error('seed must be an integer');
    config.seed = input.seed;
  }
  if (input.providers !== undefined) {
    if (!isRecord(input.providers)) throw new Error('providers must be an object');
    const providers: Partial<Record<Provider, FaultRates>> = {};
    for (const [name, rates] of Object.entries(input.providers)) {
      if (!isProvider(name)) throw new Error(`providers: unknown provider "${name}"`);
      if (!isRecord(rates)) throw new Error(`providers.${name} must be an object`);
      providers[name] = readRates(rates, `providers.${name}.`);
    }
    config.providers = providers;
  }
  if (input.script !== undefined) {
    if (!Array.isArray(input.script)) throw new Error('script must be an array');
    config.script = input.script.map((step: unknown, i): ScriptedFault => {
      if (!isRecord(step)) throw new Error(`script[${i}] must be an object`);
      if (!isFaultKind(step.fault)) throw new Error(`script[${i}].fault must be one of ${FAULT_KINDS.join('|')}`);
      if (typeof step.times !== 'number' || !Number.isInteger(step.times) || step.times < 0) {
        throw new Error(`script[${i}].times must be an integer >= 0`);
      }
      if (step.provider !== undefined && !isProvider(step.provider)) throw new Error(`script[${i}].provider is unknown`);
      return step.provider === undefined ? { fault: step.fault, times: step.times } : { provider: step.provider, fault: step.fault, times: step.times };
    });
  }
  return config;
}
