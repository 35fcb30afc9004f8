import { FAULT_KINDS, PROVIDERS, type BilledCall, type BilledUsage, type FaultKind, type ModelStats, type Provider, type StubStats } from './types';

function zeroFaults(): Record<FaultKind, number> {
  const faults = {} as Record<FaultKind, number>;
  for (const kind of FAULT_KINDS) faults[kind] = 0;
  return faults;
}

function zeroUsage(): BilledUsage {
  return { promptTokens: 0, completionTokens: 0, totalTokens: 0, images: 0, searchQueries: 0, groundedPrompts: 0 };
}

export interface Billing {
  promptTokens: number;
  completionTokens: number;
  images: number;
  /** Searches a grounded call ran; a call with any is one grounded prompt. */
  searchQueries?: number;
}

/** Counters per provider+model; a Map keeps the hot path free of object-key churn. */
export class StatsRecorder {
  private totalRequests = 0;
  private readonly models = new Map<string, ModelStats>();
  private readonly calls: BilledCall[] = [];

  /** `callLog`: keep each billed call (tests that reconcile a ledger call by call). */
  constructor(private readonly callLog = false) {}

  private entry(provider: Provider, model: string): ModelStats {
    const key = `${provider}\u0000${model}`;
    let s = this.models.get(key);
    if (!s) {
      s = { provider, model, requests: 0, successes: 0, rejected: 0, aborted: 0, faults: zeroFaults(), billed: zeroUsage() };
      this.models.set(key, s);
    }
    return s;
  }

  /** Every request on a model route, known model or not. */
  request(): void {
    this.totalRequests++;
  }

  modelRequest(provider: Provider, model: string): void {
    this.entry(provider, model).requests++;
  }

  rejected(provider: Provider, model: string): void {
    this.entry(provider, model).rejected++;
  }

  fault(provider: Provider, model: string, kind: FaultKind): void {
    this.entry(provider, model).faults[kind]++;
  }

  aborted(provider: Provider, model: string): void {
    this.entry(provider, model).aborted++;
  }

  /** Called once the full reply is written: what the response reported is what gets billed. */
  success(provider: Provider, model: string, usage: Billing, ask?: string): void {
    const s = this.entry(provider, model);
    s.successes++;
    s.billed.promptTokens += usage.promptTokens;
    s.billed.completionTokens += usage.completionTokens;
    s.billed.totalTokens += usage.promptTokens + usage.completionTokens;
    s.billed.images += usage.images;
    s.billed.searchQueries += usage.searchQueries ?? 0;
    if ((usage.searchQueries ?? 0) > 0) s.billed.groundedPrompts++;
    if (this.callLog) {
      this.calls.push({ at: Date.now(), provider, model, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, images: usage.images, ask: ask ?? '' });
    }
  }

  billedCalls(): BilledCall[] {
    return this.calls.map((c) => ({ ...c }));
  }

  reset(): void {
    this.totalRequests = 0;
    this.models.clear();
    this.calls.length = 0;
  }

  snapshot(): StubStats {
    const byProvider = {} as Record<Provider, Record<string, ModelStats>>;
    for (const p of PROVIDERS) byProvider[p] = {};
    const totals = { requests: 0, successes: 0, rejected: 0, aborted: 0, faults: zeroFaults(), billed: zeroUsage() };
    for (const s of this.models.values()) {
      byProvider[s.provider][s.model] = { ...s, faults: { ...s.faults }, billed: { ...s.billed } };
      totals.requests += s.requests;
      totals.successes += s.successes;
      totals.rejected += s.rejected;
      totals.aborted += s.aborted;
      for (const kind of FAULT_KINDS) totals.faults[kind] += s.faults[kind];
      totals.billed.promptTokens += s.billed.promptTokens;
      totals.billed.completionTokens += s.billed.completionTokens;
      totals.billed.totalTokens += s.billed.totalTokens;
      totals.billed.images += s.billed.images;
      totals.billed.searchQueries += s.billed.searchQueries;
      totals.billed.groundedPrompts += s.billed.groundedPrompts;
    }
    return { totalRequests: this.totalRequests, byProvider, totals };
  }
}
