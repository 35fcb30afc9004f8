import { type Config, PERIODS, type PeriodBudget, reachedPct } from '@tollgate/shared';

/** The configured global budgets (DESIGN: daily $50, weekly $300, monthly $1000), soft: they warn, never refuse. */
export function defaultBudgets(budgets: Config['budgets']): PeriodBudget[] {
  const limits = { day: budgets.dailyMicros, week: budgets.weeklyMicros, month: budgets.monthlyMicros };
  return PERIODS.filter((p) => limits[p] > 0).map((period) => ({
    period,
    limit_micros: limits[period],
    mode: 'soft' as const,
    thresholds_pct: [...budgets.thresholdsPercent],
  }));
}

export interface Decision {
  /** The threshold to fire now (0: none): the highest crossed one above those already handled. */
  fire: number;
  /** Crossed by the same jump and covered by `fire`: never sent. */
  inhibited: number[];
  /** A hard budget reached 100%. */
  block: boolean;
}

/** What one spend figure means for one budget, given the highest threshold already handled. */
export function decide(budget: PeriodBudget, spentMicros: number, handled: number): Decision {
  const crossed = budget.thresholds_pct.filter((t) => reachedPct(spentMicros, budget.limit_micros, t));
  const top = crossed.length > 0 ? crossed[crossed.length - 1]! : 0;
  const fire = top > handled ? top : 0;
  return {
    fire,
    inhibited: fire ? crossed.filter((t) => t > handled && t < fire) : [],
    block: budget.mode === 'hard' && reachedPct(spentMicros, budget.limit_micros, 100),
  };
}

export function scopeLabel(scope: 'global' | 'user' | 'project', scopeId: string): string {
  return scope === 'global' ? 'Global' : `${scope === 'user' ? 'User' : 'Project'} ${scopeId}`;
}
