import type Redis from 'ioredis';
import {
  CONTRIBUTOR_PREFIX,
  type Budget,
  type BudgetPeriod,
  type BudgetScope,
  type CostAlert,
  effectivePeriodBudget,
  type EventOf,
  formatUsd,
  GLOBAL_SCOPE_ID,
  LuaScript,
  parseBudgetDoc,
  PERIODS,
  periodBounds,
  type PeriodBudget,
  periodKeys,
  reachedPct,
} from '@tollgate/shared';
import { type AlertLog, fingerprintOf, newAlertId } from './alert-log';
import { decide, scopeLabel } from './budgets';
import OBSERVE_COST_LUA from './observe-cost-n.lua';

const DAY_MS = 86_400_000;
const MAX_ROUNDS = 8;

// Per ledger entry, in one step: dedupe by entry id, highest running totals, contributor sums, and
// what the decision reads back (see the script's header).
const OBSERVE = new LuaScript(OBSERVE_COST_LUA);

interface Window {
  scope: BudgetScope;
  scopeId: string;
  period: BudgetPeriod;
  periodKey: string;
  /** The running total the event carries (0 when only re-evaluating). */
  spent: number;
  endMs: number;
}

interface Observed {
  spent: number;
  hi: string;
}

interface BudgetRead {
  doc: Budget | null;
  revision: string;
}

interface EntryInfo {
  entryId: string;
  amount: number;
  fields: string[];
}

export interface CostEvaluatorDeps {
  redis: Redis;
  log: AlertLog;
  /** The global budgets from config. */
  defaults: PeriodBudget[];
  dedupeTtlSeconds: number;
  now: () => number;
  logger?: { warn(message: string, meta?: Record<string, unknown>): unknown };
}

const scopeKey = (scope: BudgetScope, id: string) => `${scope}:${id}`;

/** A small memo for values derived from a handful of recurring inputs (period ends, key names). */
function memo<V>(compute: (id: string) => V, max = 10_000): (id: string) => V {
  const cache = new Map<string, V>();
  return (id) => {
    let v = cache.get(id);
    if (v === undefined) {
      if (cache.size >= max) cache.clear();
      v = compute(id);
      cache.set(id, v);
    }
    return v;
  };
}

/** Budget threshold alerts: `cost.recorded` in, at most one alert per threshold crossing out. */
export class CostEvaluator {
  private readonly keys;
  // Every event carries the same few periods and scopes: their period ends and key names are
  // computed once, not nine times per event.
  private readonly periodEnd = memo((id) => {
    const [period, key] = id.split('|') as [BudgetPeriod, string];
    return periodBounds(period, key).end.getTime();
  });
  private readonly windowKeys = memo((id) => {
    const [scope, scopeId, period, periodKey] = id.split('|') as [BudgetScope, string, BudgetPeriod, string];
    return [this.keys.spent(scope, scopeId, period, periodKey), this.keys.window(scope, scopeId, period, periodKey)] as const;
  });

  constructor(private readonly deps: CostEvaluatorDeps) {
    this.keys = deps.log.keys;
  }

  async onCostRecorded(event: EventOf<'cost.recorded'>): Promise<void> {
    const d = event.data;
    const windows: Window[] = [];
    const seen = new Set<string>();
    for (const t of d.totals) {
      const scopeId = t.scope === 'global' ? GLOBAL_SCOPE_ID : t.scope_id;
      const id = `${t.scope}:${scopeId}:${t.period}:${t.period_key}`;
      if (seen.has(id)) continue;
      seen.add(id);
      let endMs: number;
      try {
        endMs = this.periodEnd(`${t.period}|${t.period_key}`);
      } catch {
        this.deps.logger?.warn('alerting: ignoring a total with an invalid period key', { entry_id: d.entry_id, period: t.period, period_key: t.period_key });
        continue;
      }
      windows.push({ scope: t.scope, scopeId, period: t.period, periodKey: t.period_key, spent: t.spent_micros, endMs });
    }
    const fields = [`model:${d.provider}/${d.model}`, `service:${d.service}`];
    const user = d.totals.find((t) => t.scope === 'user')?.scope_id ?? event.user_id;
    const project = d.totals.find((t) => t.scope === 'project')?.scope_id ?? event.project_id;
    if (user) fields.push(`user:${user}`);
    if (project) fields.push(`project:${project}`);
    for (let i = 0; i < fields.length; i++) fields[i] = CONTRIBUTOR_PREFIX + fields[i];
    await this.evaluate(windows, { entryId: d.entry_id, amount: d.amount_micros, fields }, event.correlation_id);
  }

  /** After a budget change: decides again for the scope's current periods from the spend already seen. */
  async reevaluateScope(scope: BudgetScope, scopeId: string): Promise<void> {
    const now = this.deps.now();
    const keys = periodKeys(now);
    const windows = PERIODS.map((period) => ({
      scope,
      scopeId,
      period,
      periodKey: keys[period],
      spent: 0,
      endMs: periodBounds(period, keys[period]).end.getTime(),
    }));
    await this.evaluate(windows, null, undefined);
  }

  private async evaluate(windows: Window[], entry: EntryInfo | null, correlationId: string | undefined): Promise<void> {
    if (windows.length === 0) return;
    let pending = windows.map((_, i) => i);
    let state = await this.observe(windows, entry);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const conflicts: number[] = [];
      for (const i of pending) {
        const w = windows[i]!;
        const outcome = await this.applyWindow(w, state.windows[i]!, state.budgets.get(scopeKey(w.scope, w.scopeId))!, correlationId);
        if (outcome === 'conflict') conflicts.push(i);
      }
      if (conflicts.length === 0) return;
      pending = conflicts;
      state = await this.observe(windows, null);
    }
    // The bus retries the handler, then dead-letters: a window that changes this often is a bug to see.
    throw new Error(`budget windows kept changing under evaluation (${pending.length} left)`);
  }

  private async observe(windows: Window[], entry: EntryInfo | null): Promise<{ windows: Observed[]; budgets: Map<string, BudgetRead> }> {
    const k = this.keys;
    const scopes = [...new Map(windows.map((w) => [scopeKey(w.scope, w.scopeId), w])).values()];
    const keys = [entry ? k.seenEntry(entry.entryId) : k.seenEntry('-')];
    for (const w of windows) keys.push(...this.windowKeys(`${w.scope}|${w.scopeId}|${w.period}|${w.periodKey}`));
    for (const s of scopes) keys.push(k.budget(s.scope, s.scopeId), k.budgetRevision(s.scope, s.scopeId));
    const fields = entry?.fields ?? [];
    const args: Array<string | number> = [entry ? this.deps.dedupeTtlSeconds : 0, entry?.amount ?? 0, windows.length, scopes.length, fields.length, ...fields];
    for (const w of windows) args.push(w.spent, w.endMs + DAY_MS);
    const out = (await OBSERVE.run(this.deps.redis, keys, args)) as Array<string | number>;
    const observed: Observed[] = windows.map((_, i) => ({ spent: Number(out[1 + i * 2]), hi: String(out[2 + i * 2]) }));
    const budgets = new Map<string, BudgetRead>();
    const base = 1 + windows.length * 2;
    scopes.forEach((s, j) => {
      const raw = String(out[base + j * 2] ?? '');
      const revision = String(out[base + j * 2 + 1] ?? '0');
      budgets.set(scopeKey(s.scope, s.scopeId), { doc: parseBudgetDoc(raw || null, revision), revision });
    });
    return { windows: observed, budgets };
  }

  private async applyWindow(w: Window, obs: Observed, read: BudgetRead, correlationId: string | undefined): Promise<'skip' | 'conflict' | 'done'> {
    const now = this.deps.now();
    const budget = effectivePeriodBudget(w.scope, read.doc, this.deps.defaults, w.period);
    // A late entry for a period that already ended changes nothing: its alerts are being resolved.
    if (!budget || w.endMs <= now) return 'skip';
    const decision = decide(budget, obs.spent, Number(obs.hi));
    // Setting a block that exists is harmless, and after a block few entries still arrive (the
    // calls that were already running), so it is not read first.
    const block = decision.block;
    if (!decision.fire && !block) return 'skip';

    let alert: CostAlert | undefined;
    if (decision.fire) {
      const hard = budget.mode === 'hard';
      const label = scopeLabel(w.scope, w.scopeId);
      alert = {
        kind: 'cost',
        alert_id: newAlertId(),
        fingerprint: fingerprintOf('cost', w.scope, w.scopeId, w.period, w.periodKey, decision.fire),
        state: 'firing',
        scope: w.scope,
        scope_id: w.scopeId,
        period: w.period,
        period_key: w.periodKey,
        threshold_pct: decision.fire,
        spent_micros: obs.spent,
        limit_micros: budget.limit_micros,
        hard,
        top_contributors: await this.topContributors(w),
        inhibited_pct: decision.inhibited,
        summary:
          `${label}: ${decision.fire}% of the ${w.period} budget (${w.periodKey}) reached, ` +
          `$${formatUsd(obs.spent)} of $${formatUsd(budget.limit_micros)}` +
          (hard && decision.fire >= 100 ? '. Paid requests are refused until the period ends or the budget is raised.' : '.'),
        fired_at: new Date(now).toISOString(),
        ...(correlationId && { correlation_id: correlationId }),
      };
    }
    const res = await this.deps.log.applyCostWindow(
      {
        scope: w.scope,
        scopeId: w.scopeId,
        period: w.period,
        periodKey: w.periodKey,
        expectedRevision: read.revision,
        expectedHi: obs.hi,
        windowExpireAtMs: w.endMs + DAY_MS,
        ...(block && {
          block: { value: JSON.stringify({ spent_micros: obs.spent, limit_micros: budget.limit_micros }), untilMs: w.endMs },
        }),
        ...(alert && { fire: { threshold: decision.fire, alert } }),
      },
      now,
    );
    return res.outcome === 'conflict' ? 'conflict' : 'done';
  }

  /** The biggest contributors to this window's spend by model, service and (where it says more) user or project. */
  private async topContributors(w: Window): Promise<CostAlert['top_contributors']> {
    const all = await this.deps.redis.hgetall(this.keys.window(w.scope, w.scopeId, w.period, w.periodKey));
    const byDimension = new Map<string, Array<{ dimension: string; key: string; micros: number }>>();
    for (const [f, v] of Object.entries(all)) {
      if (!f.startsWith(CONTRIBUTOR_PREFIX)) continue;
      const i = f.indexOf(':', CONTRIBUTOR_PREFIX.length);
      const dimension = f.slice(CONTRIBUTOR_PREFIX.length, i);
      if (dimension === w.scope) continue; // a user's spend is all that user's
      const list = byDimension.get(dimension) ?? [];
      list.push({ dimension, key: f.slice(i + 1).slice(0, 128), micros: Number(v) });
      byDimension.set(dimension, list);
    }
    return [...byDimension.values()].flatMap((list) => list.sort((a, b) => b.micros - a.micros || a.key.localeCompare(b.key)).slice(0, 3));
  }

  /**
   * Resolves firing budget alerts whose reason is gone: their period ended, or the budget was
   * raised (or removed) so the spend no longer reaches their threshold. A raised budget moves
   * the window back, so a threshold crossed again under the new budget fires again.
   */
  async resolveStale(alerts: CostAlert[]): Promise<number> {
    const now = this.deps.now();
    const groups = new Map<string, CostAlert[]>();
    for (const a of alerts) {
      const id = `${a.scope}:${a.scope_id}:${a.period}:${a.period_key}`;
      groups.set(id, [...(groups.get(id) ?? []), a]);
    }
    const reads = new Map<string, Budget | null>();
    let resolved = 0;
    for (const group of groups.values()) {
      const { scope, scope_id: scopeId, period, period_key: periodKey } = group[0]!;
      const windowKey = this.keys.window(scope, scopeId, period, periodKey);
      const spentRaw = await this.deps.redis.get(this.keys.spent(scope, scopeId, period, periodKey));
      const spent = spentRaw === null ? undefined : Number(spentRaw);
      const label = scopeLabel(scope, scopeId);
      if (now >= periodBounds(period, periodKey).end.getTime()) {
        for (const a of group) {
          const summary = `${label}: the ${period} ${periodKey} is over, so the ${a.threshold_pct}% alert is resolved.`;
          if (await this.resolveOne(a, now, 'period_rollover', summary, spent ?? a.spent_micros, a.limit_micros)) resolved++;
        }
        continue;
      }
      const sk = scopeKey(scope, scopeId);
      if (!reads.has(sk)) {
        const [raw, rev] = await this.deps.redis.mget(this.keys.budget(scope, scopeId), this.keys.budgetRevision(scope, scopeId));
        reads.set(sk, parseBudgetDoc(raw, rev));
      }
      const budget = effectivePeriodBudget(scope, reads.get(sk)!, this.deps.defaults, period);
      const current = spent ?? 0;
      const keep = budget ? group.filter((a) => reachedPct(current, budget.limit_micros, a.threshold_pct)) : [];
      const newHi = Math.max(0, ...keep.map((a) => a.threshold_pct));
      for (const a of group) {
        if (keep.includes(a)) continue;
        const reason = budget ? 'budget_raised' : 'budget_removed';
        const summary = budget
          ? `${label}: the ${period} budget is now $${formatUsd(budget.limit_micros)}; $${formatUsd(current)} is under ${a.threshold_pct}% of it.`
          : `${label}: the ${period} budget was removed.`;
        if (await this.resolveOne(a, now, reason, summary, current, budget?.limit_micros ?? a.limit_micros, { key: windowKey, newHi })) resolved++;
      }
    }
    return resolved;
  }

  private async resolveOne(
    a: CostAlert,
    now: number,
    reason: NonNullable<CostAlert['resolve_reason']>,
    summary: string,
    spent: number,
    limit: number,
    window?: { key: string; newHi: number },
  ): Promise<boolean> {
    const resolved: CostAlert = {
      ...a,
      state: 'resolved',
      spent_micros: spent,
      limit_micros: limit,
      summary,
      resolved_at: new Date(now).toISOString(),
      resolve_reason: reason,
    };
    return (await this.deps.log.resolve(resolved, now, window)) !== null;
  }
}
