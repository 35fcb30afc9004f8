import type Redis from 'ioredis';
import {
  type Budget,
  type BudgetPeriod,
  type BudgetScope,
  type CostAlert,
  effectivePeriodBudget,
  type EventOf,
  formatUsd,
  GLOBAL_SCOPE_ID,
  LedgerReader,
  ledgerKeys,
  LuaScript,
  parseBudgetDoc,
  PERIODS,
  periodBounds,
  type PeriodBudget,
  periodKeys,
  reachedPct,
  scopeField,
  TollgateError,
} from '@tollgate/shared';
import { type AlertLog, fingerprintOf, newAlertId } from './alert-log';
import { BudgetIndex } from './budget-index';
import { decide, scopeLabel } from './budgets';
import OBSERVE_COST_LUA from './observe-cost-n.lua';

const DAY_MS = 86_400_000;
const MAX_ROUNDS = 8;
/** Contributors named per dimension (model, service, user or project). */
const TOP_N = 3;

// The windows of one event in one step: highest running totals, and what the decision reads back
// (see the script's header).
const OBSERVE = new LuaScript(OBSERVE_COST_LUA);

/** A window that kept changing under evaluation: the bus retries the handler, then dead-letters it. */
export class BudgetEvaluationError extends TollgateError {
  constructor(pending: number) {
    super('budget_windows_unsettled', `budget windows kept changing under evaluation (${pending} left)`, { details: { pending } });
  }
}

interface Window {
  scope: BudgetScope;
  scopeId: string;
  period: BudgetPeriod;
  periodKey: string;
  /** The running total the event carries (0 when only re-evaluating). */
  spent: number;
  endMs: number;
  /** Also take the ledger's running total (a re-evaluation: the scope may not have been tracked). */
  fromLedger: boolean;
  /** The event that carried `spent`: an alert it fires names its request. */
  correlationId?: string | undefined;
}

interface Observed {
  spent: number;
  hi: string;
}

interface BudgetRead {
  doc: Budget | null;
  revision: string;
}

export interface CostEvaluatorDeps {
  redis: Redis;
  log: AlertLog;
  /** The namespace the ledger writes under (the alerting keys' too). */
  namespace: string;
  /** The global budgets from config. */
  defaults: PeriodBudget[];
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

/**
 * Budget threshold alerts: `cost.recorded` in, at most one alert per threshold crossing out. Only
 * scopes with a budget are evaluated (see BudgetIndex); top contributors come from the ledger.
 */
export class CostEvaluator {
  private readonly keys;
  private readonly ledger;
  private readonly reader: LedgerReader;
  readonly budgetIndex: BudgetIndex;
  /** Cost events waiting for the decision in flight, the decision queued for them, and the one in flight. */
  private waiting: Array<EventOf<'cost.recorded'>> = [];
  private next: Promise<void> | undefined;
  private deciding: Promise<void> = Promise.resolve();
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
    this.ledger = ledgerKeys(deps.namespace);
    this.reader = new LedgerReader(deps.redis, deps.namespace);
    this.budgetIndex = new BudgetIndex(deps.redis, this.keys, deps.defaults.length > 0);
  }

  /** Loads the budget index; before it, only the global scope's defaults are known. */
  async start(): Promise<void> {
    await this.budgetIndex.reload();
  }

  onCostRecorded(event: EventOf<'cost.recorded'>): Promise<void> {
    return this.onCostRecordedMany([event]);
  }

  /**
   * A bus read's cost events. A scope without a budget costs nothing here. Spend is a maximum, so
   * each window the read touches is decided once, at the highest running total any of its events
   * carries: a busy scope (the global one above all) costs one step per read, not one per event.
   * The index version read with the windows (or alone, when none has a budget) tells whether the
   * reading that decided which are tracked was current; the same reading is compared, since a
   * sweep may reload the index meanwhile.
   */
  onCostRecordedMany(events: ReadonlyArray<EventOf<'cost.recorded'>>): Promise<void> {
    // Reads that arrive while a decision is out (the bus reads each partition on its own) wait
    // for it and are decided together after it: under load the busy windows cost one step per
    // round, not one per read; idle, nothing waits.
    this.waiting.push(...events);
    this.next ??= this.deciding.then(() => {
      const batch = this.waiting;
      this.waiting = [];
      this.next = undefined;
      return this.decideMany(batch);
    });
    const mine = this.next;
    this.deciding = mine.catch(() => undefined);
    return mine;
  }

  private async decideMany(events: ReadonlyArray<EventOf<'cost.recorded'>>): Promise<void> {
    const view = this.budgetIndex.view();
    const all = this.windowsOf(events);
    const tracked = all.filter((w) => view.has(w.scope, w.scopeId));
    const version = tracked.length > 0 ? await this.evaluate(tracked) : await this.budgetIndex.readVersion();
    if (view.isAt(version)) return;
    const newer = await this.budgetIndex.catchUp(version);
    const late = all.filter((w) => !view.has(w.scope, w.scopeId) && newer.has(w.scope, w.scopeId));
    if (late.length > 0) await this.evaluate(late);
  }

  /** The windows the events' running totals fall in, each once, at the highest total carried. */
  private windowsOf(events: ReadonlyArray<EventOf<'cost.recorded'>>): Window[] {
    const byId = new Map<string, Window>();
    for (const event of events) {
      const d = event.data;
      for (const t of d.totals) {
        const scopeId = t.scope === 'global' ? GLOBAL_SCOPE_ID : t.scope_id;
        const id = `${t.scope}:${scopeId}:${t.period}:${t.period_key}`;
        const seen = byId.get(id);
        if (seen) {
          if (t.spent_micros > seen.spent) {
            seen.spent = t.spent_micros;
            seen.correlationId = event.correlation_id;
          }
          continue;
        }
        let endMs: number;
        try {
          endMs = this.periodEnd(`${t.period}|${t.period_key}`);
        } catch {
          this.deps.logger?.warn('alerting: ignoring a total with an invalid period key', { entry_id: d.entry_id, period: t.period, period_key: t.period_key });
          continue;
        }
        byId.set(id, { scope: t.scope, scopeId, period: t.period, periodKey: t.period_key, spent: t.spent_micros, endMs, fromLedger: false, correlationId: event.correlation_id });
      }
    }
    return [...byId.values()];
  }

  /** Reloads the budget index if a budget appeared or went since it was read (the sweeper calls it). */
  refreshBudgetIndex(): Promise<void> {
    return this.budgetIndex.refresh();
  }

  /**
   * After a budget change: decides again for the scope's current periods. The spend is the higher
   * of what alerting tracked and the ledger's running total, so a budget set mid-period on a scope
   * that was not tracked fires what its spend has already crossed.
   */
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
      fromLedger: true,
    }));
    await this.evaluate(windows);
  }

  /** Decides every window; returns the budget index version the first read saw. */
  private async evaluate(windows: Window[]): Promise<string> {
    let pending = windows.map((_, i) => i);
    let state = await this.observe(windows);
    const version = state.version;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const conflicts: number[] = [];
      for (const i of pending) {
        const w = windows[i]!;
        const outcome = await this.applyWindow(w, state.windows[i]!, state.budgets.get(scopeKey(w.scope, w.scopeId))!);
        if (outcome === 'conflict') conflicts.push(i);
      }
      if (conflicts.length === 0) return version;
      pending = conflicts;
      state = await this.observe(windows);
    }
    // A window that changes this often is a bug to see.
    throw new BudgetEvaluationError(pending.length);
  }

  private async observe(windows: Window[]): Promise<{ version: string; windows: Observed[]; budgets: Map<string, BudgetRead> }> {
    const k = this.keys;
    const scopes = [...new Map(windows.map((w) => [scopeKey(w.scope, w.scopeId), w])).values()];
    const keys = [k.budgetIndexVersion];
    const args: Array<string | number> = [windows.length, scopes.length];
    for (const w of windows) {
      const [spent, win] = this.windowKeys(`${w.scope}|${w.scopeId}|${w.period}|${w.periodKey}`);
      keys.push(spent, win, w.fromLedger ? this.ledger.totals(w.period, w.periodKey) : win);
      args.push(w.spent, w.endMs + DAY_MS, w.fromLedger ? scopeField(w.scope, w.scopeId) : '');
    }
    for (const s of scopes) keys.push(k.budget(s.scope, s.scopeId), k.budgetRevision(s.scope, s.scopeId));
    const out = (await OBSERVE.run(this.deps.redis, keys, args)) as Array<string | number>;
    const observed: Observed[] = windows.map((_, i) => ({ spent: Number(out[1 + i * 2]), hi: String(out[2 + i * 2]) }));
    const budgets = new Map<string, BudgetRead>();
    const base = 1 + windows.length * 2;
    scopes.forEach((s, j) => {
      const raw = String(out[base + j * 2] ?? '');
      const revision = String(out[base + j * 2 + 1] ?? '0');
      budgets.set(scopeKey(s.scope, s.scopeId), { doc: parseBudgetDoc(raw || null, revision), revision });
    });
    return { version: String(out[0] ?? '0'), windows: observed, budgets };
  }

  private async applyWindow(w: Window, obs: Observed, read: BudgetRead): Promise<'skip' | 'conflict' | 'done'> {
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
        top_contributors: await this.topContributors(w, now),
        inhibited_pct: decision.inhibited,
        summary:
          `${label}: ${decision.fire}% of the ${w.period} budget (${w.periodKey}) reached, ` +
          `$${formatUsd(obs.spent)} of $${formatUsd(budget.limit_micros)}` +
          (hard && decision.fire >= 100 ? '. Paid requests are refused until the period ends or the budget is raised.' : '.'),
        fired_at: new Date(now).toISOString(),
        ...(w.correlationId && { correlation_id: w.correlationId }),
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

  /**
   * The biggest contributors to this window's spend by model, service and (where it says more)
   * user or project, from the ledger's aggregates of the scope's days in the period so far: exact
   * figures as of the firing, whoever's instance saw which entries.
   */
  private async topContributors(w: Window, now: number): Promise<CostAlert['top_contributors']> {
    const scope = w.scope === 'user' ? { user: w.scopeId } : w.scope === 'project' ? { project: w.scopeId } : undefined;
    const fields = await this.reader.fields(w.period, w.periodKey, scope, new Date(now));
    // A user's spend is all that user's, a project's all that project's: those say nothing.
    const dimensions = ['model', 'service', 'user', 'project'].filter((d) => d !== w.scope);
    return dimensions.flatMap((dimension) => {
      const prefix = `${dimension}:`;
      const list: CostAlert['top_contributors'] = [];
      for (const [f, micros] of fields) {
        if (f.startsWith(prefix) && micros > 0 && f.length > prefix.length) list.push({ dimension, key: f.slice(prefix.length, prefix.length + 128), micros });
      }
      return list.sort((a, b) => b.micros - a.micros || a.key.localeCompare(b.key)).slice(0, TOP_N);
    });
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
