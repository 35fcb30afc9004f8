/** Base for every error Tollgate throws on purpose: a stable machine-readable `code` and optional details. */
export class TollgateError extends Error {
  readonly code: string;
  readonly details?: unknown;

  constructor(code: string, message: string, options?: { details?: unknown; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options?.details;
  }
}

/** An event that does not match the catalog (unknown type, bad envelope or bad data). */
export class InvalidEventError extends TollgateError {
  constructor(message: string, details?: unknown) {
    super('invalid_event', message, { details });
  }
}

export type BudgetScope = 'global' | 'user' | 'project';
export type BudgetPeriod = 'day' | 'week' | 'month';

/** A hard budget is reached: paid work for this scope is refused until the period rolls over or the budget is raised. */
export class BudgetExceededError extends TollgateError {
  readonly scope: BudgetScope;
  readonly scopeId: string;
  readonly period: BudgetPeriod;

  constructor(
    scope: BudgetScope,
    scopeId: string,
    period: BudgetPeriod,
    readonly amounts: { spent_micros?: number; held_micros?: number; limit_micros?: number; request_worst_case_micros?: number } = {},
  ) {
    super('budget_exceeded', `The ${period} budget for ${scope} ${scopeId} is used up`, { details: amounts });
    this.scope = scope;
    this.scopeId = scopeId;
    this.period = period;
  }
}
