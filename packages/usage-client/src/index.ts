/**
 * A client for Tollgate's external usage API: ask whether a hard budget can take a paid call
 * (hold its worst case), run it, then report what it used or give the hold back. `withHold` does
 * all three, so the easy path is the correct one. Depends on nothing but the global `fetch`.
 */

export interface UsageClientOptions {
  /** The gateway, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** A key with the `usage` scope. */
  apiKey: string;
  fetch?: typeof fetch;
  /** Attempts for a report that failed in transit or with a 5xx (default 4); the hold id makes retries count once. */
  reportAttempts?: number;
  /** First retry delay in ms, doubled each time (default 200). */
  retryDelayMs?: number;
}

export interface UsageHold {
  hold_id: string;
  operation: string;
  units: number;
  calls: number;
  worst_micros: number;
  worst_usd: string;
  /** False when no hard budget covers the key: nothing is reserved, the id still names the call. */
  held: boolean;
  expires_at: string;
  price_version: string;
}

export interface UsageReport {
  usage_event_id: string;
  operation: string;
  units: number;
  calls: number;
  cost: { micros: number; usd: string; price_version: string };
  hold_id?: string;
  hold?: 'settling' | 'expired' | 'none';
  worst_micros?: number;
}

/** What Tollgate answered with an error: `code` is machine-readable (`budget_exceeded`, `unknown_operation`, ...). */
export class TollgateUsageError extends Error {
  readonly status: number;
  readonly code: string;
  /** On a 402: which budget refused and, for the key's own user or project, the figures. */
  readonly budget?: Record<string, string | number>;
  constructor(status: number, code: string, message: string, budget?: Record<string, string | number>) {
    super(message);
    this.name = 'TollgateUsageError';
    this.status = status;
    this.code = code;
    if (budget) this.budget = budget;
  }
}

/** The call succeeded but its report could not be delivered; `result` is what the call returned. */
export class UsageReportError<T = unknown> extends Error {
  readonly result: T;
  readonly hold: UsageHold;
  constructor(cause: unknown, result: T, hold: UsageHold) {
    super(`The call ran but its usage could not be reported (hold ${hold.hold_id}): ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'UsageReportError';
    this.result = result;
    this.hold = hold;
  }
}

/** What the guarded call returns: its value and the units it really used. */
export interface Measured<T> {
  result: T;
  units: number;
  calls?: number;
}

export class UsageClient {
  private readonly base: string;
  private readonly fetcher: typeof fetch;
  private readonly attempts: number;
  private readonly delay: number;

  constructor(private readonly opts: UsageClientOptions) {
    this.base = opts.baseUrl.replace(/\/+$/, '');
    this.fetcher = opts.fetch ?? fetch;
    this.attempts = Math.max(1, opts.reportAttempts ?? 4);
    this.delay = opts.retryDelayMs ?? 200;
  }

  /** Reserves the worst case of `units` on the key's hard budgets; a 402 throws TollgateUsageError with `code: 'budget_exceeded'`. */
  hold(operation: string, units: number, o: { calls?: number; ttlSeconds?: number } = {}): Promise<UsageHold> {
    return this.call<UsageHold>('POST', '/v1/usage/holds', { operation, units, ...(o.calls !== undefined && { calls: o.calls }), ...(o.ttlSeconds !== undefined && { ttl_seconds: o.ttlSeconds }) });
  }

  /**
   * Records what a call used. With `holdId` it settles that hold; a retry of the same report
   * counts once (by the hold, or by `idempotencyKey` without one). Retried on transport errors and 5xx.
   */
  async report(operation: string, units: number, o: { holdId?: string; calls?: number; idempotencyKey?: string } = {}): Promise<UsageReport> {
    const body = { operation, units, ...(o.calls !== undefined && { calls: o.calls }), ...(o.holdId !== undefined && { hold_id: o.holdId }) };
    const headers = o.idempotencyKey !== undefined ? { 'idempotency-key': o.idempotencyKey } : undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.call<UsageReport>('POST', '/v1/usage', body, headers);
      } catch (err) {
        // 409 "still being recorded" and 5xx pass with time; other 4xx never do.
        const transient = !(err instanceof TollgateUsageError) || err.status >= 500 || (err.status === 409 && /still being recorded/.test(err.message));
        // A retry without a hold or key could count twice, so only an identifiable report is retried.
        if (!transient || attempt >= this.attempts || (o.holdId === undefined && o.idempotencyKey === undefined)) throw err;
        await new Promise((r) => setTimeout(r, this.delay * 2 ** (attempt - 1)));
      }
    }
  }

  /** Gives an unused hold back at once (it would otherwise last until it expires). */
  async release(holdId: string): Promise<void> {
    await this.call('DELETE', `/v1/usage/holds/${encodeURIComponent(holdId)}`);
  }

  /**
   * Holds `units` (the worst case) of `operation`, runs `fn`, and reports the units `fn` says it
   * used, settling the hold; if `fn` throws, the hold is released and the error rethrown. A refusal
   * (402) throws before `fn` runs, so a call the budget cannot take is never made.
   */
  async withHold<T>(operation: string, units: number, fn: (hold: UsageHold) => Promise<Measured<T>>, o: { calls?: number; ttlSeconds?: number } = {}): Promise<T> {
    const hold = await this.hold(operation, units, o);
    let measured: Measured<T>;
    try {
      measured = await fn(hold);
    } catch (err) {
      await this.release(hold.hold_id).catch(() => undefined); // it expires anyway
      throw err;
    }
    try {
      await this.report(operation, measured.units, { holdId: hold.hold_id, ...(measured.calls !== undefined && { calls: measured.calls }) });
    } catch (err) {
      throw new UsageReportError(err, measured.result, hold);
    }
    return measured.result;
  }

  private async call<T>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
    const res = await this.fetcher(`${this.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.opts.apiKey}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    const json = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string; budget?: Record<string, string | number> } } | undefined)?.error;
      throw new TollgateUsageError(res.status, e?.code ?? 'http_error', e?.message ?? `HTTP ${res.status}`, e?.budget);
    }
    return json as T;
  }
}
