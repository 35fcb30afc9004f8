import type Redis from 'ioredis';
import { z } from 'zod';
import type { BudgetPeriod, BudgetScope } from '../errors/tollgate-error';
import { PERIODS, periodBounds, periodKeys } from '../time/periods';
import { holdKeys, scopeField } from '../budget/holds';
import { alertingKeys, GLOBAL_SCOPE_ID } from './keys';
import { LuaScript } from '../lua';
import { ledgerKeys } from '../ledger/ledger-keys';
import WRITE_BUDGET_LUA from './write-budget-14.lua';

export const BUDGET_SCOPES = ['global', 'user', 'project'] as const;
export const BUDGET_MODES = ['soft', 'hard'] as const;
export type BudgetMode = (typeof BUDGET_MODES)[number];
export const DEFAULT_THRESHOLDS_PCT: readonly number[] = [50, 80, 100];

export const budgetScopeSchema = z.enum(BUDGET_SCOPES);
/** The same alphabet API keys allow for user and project ids, so every id a key carries can have a budget. */
export const budgetScopeIdSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, dot, dash or underscore (1-64)');

const thresholdsSchema = z
  .array(z.number().int().min(1).max(1000))
  .min(1)
  .max(10)
  .overwrite((ts) => [...new Set(ts)].sort((a, b) => a - b));

export const periodBudgetSchema = z.strictObject({
  period: z.enum(['day', 'week', 'month']),
  /** Integer micro-dollars; a float or a negative amount is refused, never rounded. */
  limit_micros: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  /** `hard` refuses new paid work at 100%; `soft` only alerts. */
  mode: z.enum(BUDGET_MODES).default('soft'),
  thresholds_pct: thresholdsSchema.default([...DEFAULT_THRESHOLDS_PCT]),
});
export type PeriodBudget = z.output<typeof periodBudgetSchema>;

export const budgetInputSchema = z.strictObject({
  periods: z
    .array(periodBudgetSchema)
    .min(1)
    .max(3)
    .refine((ps) => new Set(ps.map((p) => p.period)).size === ps.length, 'each period may appear only once'),
});
export type BudgetInput = z.input<typeof budgetInputSchema>;

const storedBudgetSchema = z.object({
  scope: budgetScopeSchema,
  scope_id: z.string(),
  periods: z.array(periodBudgetSchema),
  updated_at: z.string(),
});

export interface Budget {
  scope: BudgetScope;
  scope_id: string;
  periods: PeriodBudget[];
  /** Increases with every write; the alerting service re-checks its decisions against it. */
  revision: number;
  updated_at: string;
}

export interface PeriodStatus {
  period: BudgetPeriod;
  period_key: string;
  spent_micros: number;
  /** Worst-case cost held for requests in flight on this scope's hard budgets (see budget/holds.ts). */
  reserved_micros: number;
  limit_micros: number | null;
  mode: BudgetMode | null;
  /** Percent of the limit used, rounded down; null without a limit. */
  used_pct: number | null;
  blocked: boolean;
  resets_at: string;
}

/** A hard budget that is used up, as the block key records it. */
export interface BudgetBlock {
  scope: BudgetScope;
  scope_id: string;
  period: BudgetPeriod;
  spent_micros?: number;
  limit_micros?: number;
}

/** Parses a stored budget document; a corrupt one reads as absent rather than failing every request. */
export function parseBudgetDoc(raw: string | null | undefined, revision: string | null | undefined): Budget | null {
  if (!raw) return null;
  try {
    const doc = storedBudgetSchema.parse(JSON.parse(raw));
    return { ...doc, revision: Number(revision ?? 0) };
  } catch {
    return null;
  }
}

/**
 * The budget that applies to one scope and period. The global scope starts from the configured
 * defaults and a stored global budget overrides them period by period; users and projects have
 * only what was set for them.
 */
export function effectivePeriodBudget(
  scope: BudgetScope,
  stored: Budget | null,
  defaults: readonly PeriodBudget[] | null,
  period: BudgetPeriod,
): PeriodBudget | undefined {
  const own = stored?.periods.find((p) => p.period === period);
  if (own || scope !== 'global') return own;
  return defaults?.find((p) => p.period === period);
}

/** Exact percent comparisons on integers: spent / limit >= pct / 100 without floating point. */
export function reachedPct(spentMicros: number, limitMicros: number, pct: number): boolean {
  return BigInt(spentMicros) * 100n >= BigInt(limitMicros) * BigInt(pct);
}

function usedPct(spent: number, limit: number): number {
  return Number((BigInt(spent) * 100n) / BigInt(limit));
}

// Writes the budget and each period's block together (see the script's header).
const WRITE_BUDGET = new LuaScript(WRITE_BUDGET_LUA);

export class BudgetStore {
  private readonly keys: ReturnType<typeof alertingKeys>;

  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
  ) {
    this.keys = alertingKeys(namespace);
  }

  async get(scope: BudgetScope, scopeId: string): Promise<Budget | null> {
    const [raw, rev] = await this.redis.mget(this.keys.budget(scope, scopeId), this.keys.budgetRevision(scope, scopeId));
    return parseBudgetDoc(raw, rev);
  }

  async list(): Promise<Budget[]> {
    const members = (await this.redis.smembers(this.keys.budgetIndex)).sort();
    if (members.length === 0) return [];
    const pairs = members.map((m) => splitMember(m));
    const raws = await this.redis.mget(pairs.flatMap(([s, id]) => [this.keys.budget(s, id), this.keys.budgetRevision(s, id)]));
    return pairs.map((_, i) => parseBudgetDoc(raws[2 * i], raws[2 * i + 1])).filter((b): b is Budget => b !== null);
  }

  /** Replaces the scope's budget; throws a ZodError for a bad scope, id or body. */
  async put(scope: BudgetScope, scopeId: string, input: unknown, now = Date.now()): Promise<{ budget: Budget; created: boolean }> {
    const id = checkScope(scope, scopeId);
    const { periods } = budgetInputSchema.parse(input);
    const doc = { scope, scope_id: id, periods, updated_at: new Date(now).toISOString() };
    const [revision, existed] = await this.write(scope, id, JSON.stringify(doc), periods, now);
    return { budget: { ...doc, revision }, created: existed === 0 };
  }

  /** True when a budget was stored; a removed global budget falls back to the configured defaults. */
  async remove(scope: BudgetScope, scopeId: string, now = Date.now()): Promise<boolean> {
    const id = checkScope(scope, scopeId);
    const [, existed] = await this.write(scope, id, '', [], now);
    return existed === 1;
  }

  /** The configured global defaults, as the alerting service last published them. */
  async defaults(): Promise<PeriodBudget[] | null> {
    const raw = await this.redis.get(this.keys.budgetDefaults);
    if (!raw) return null;
    const parsed = z.array(periodBudgetSchema).safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  }

  async publishDefaults(periods: readonly PeriodBudget[]): Promise<void> {
    await this.redis.set(this.keys.budgetDefaults, JSON.stringify(periods));
  }

  /**
   * Spend, limit and block of each period as of `now`. Spend is the higher of alerting's copy and
   * the ledger's running total: alerting keeps a copy only for scopes with a budget.
   */
  async status(scope: BudgetScope, scopeId: string, now = Date.now()): Promise<PeriodStatus[]> {
    const keys = periodKeys(now);
    const [budget, defaults] = await Promise.all([this.get(scope, scopeId), scope === 'global' ? this.defaults() : null]);
    const pipe = this.redis.pipeline();
    const held = holdKeys(this.namespace);
    const ledger = ledgerKeys(this.namespace);
    const field = scopeField(scope, scopeId);
    for (const p of PERIODS) {
      pipe.get(this.keys.spent(scope, scopeId, p, keys[p]));
      pipe.exists(this.keys.block(scope, scopeId, p));
      pipe.hget(held.held(p, keys[p]), field);
      pipe.hget(ledger.totals(p, keys[p]), field);
    }
    const res = (await pipe.exec()) ?? [];
    return PERIODS.map((period, i) => {
      const spent = Math.max(Number(res[4 * i]?.[1] ?? 0), Number(res[4 * i + 3]?.[1] ?? 0));
      const b = effectivePeriodBudget(scope, budget, defaults, period);
      return {
        period,
        period_key: keys[period],
        spent_micros: spent,
        reserved_micros: Math.max(0, Number(res[4 * i + 2]?.[1] ?? 0)),
        limit_micros: b?.limit_micros ?? null,
        mode: b?.mode ?? null,
        used_pct: b ? usedPct(spent, b.limit_micros) : null,
        blocked: Number(res[4 * i + 1]?.[1] ?? 0) === 1,
        resets_at: periodBounds(period, keys[period]).end.toISOString(),
      };
    });
  }

  private async write(scope: BudgetScope, id: string, doc: string, periods: readonly PeriodBudget[], now: number): Promise<[number, number]> {
    const current = periodKeys(now);
    const ledger = ledgerKeys(this.namespace);
    const args: Array<string | number> = [doc, `${scope}:${id}`, scopeField(scope, id)];
    for (const p of PERIODS) {
      const b = periods.find((x) => x.period === p);
      args.push(b?.limit_micros ?? 0, b?.mode === 'hard' ? 1 : 0, periodBounds(p, current[p]).end.getTime());
    }
    const res = (await WRITE_BUDGET.run(
      this.redis,
      [
        this.keys.budget(scope, id),
        this.keys.budgetRevision(scope, id),
        this.keys.budgetIndex,
        this.keys.budgetDirty,
        this.keys.budgetIndexVersion,
        ...PERIODS.map((p) => this.keys.block(scope, id, p)),
        ...PERIODS.map((p) => this.keys.spent(scope, id, p, current[p])),
        ...PERIODS.map((p) => ledger.totals(p, current[p])),
      ],
      args,
    )) as [number, number];
    return [Number(res[0]), Number(res[1])];
  }
}

function checkScope(scope: BudgetScope, scopeId: string): string {
  budgetScopeSchema.parse(scope);
  if (scope === 'global') {
    z.literal(GLOBAL_SCOPE_ID, { message: `the global budget's id is "${GLOBAL_SCOPE_ID}"` }).parse(scopeId);
    return GLOBAL_SCOPE_ID;
  }
  return budgetScopeIdSchema.parse(scopeId);
}

export function splitMember(member: string): [BudgetScope, string] {
  const i = member.indexOf(':');
  return [member.slice(0, i) as BudgetScope, member.slice(i + 1)];
}

const blockValueSchema = z.object({ spent_micros: z.number().optional(), limit_micros: z.number().optional() });

/** A block key's place: one period of one scope a request is checked against. */
export interface BlockCell {
  scope: BudgetScope;
  id: string;
  period: BudgetPeriod;
}

/** What a paid request is checked against, in order: the user's, the project's, then the global periods. */
export function blockCells(who: { user_id: string; project_id: string }): BlockCell[] {
  const scopes: Array<[BudgetScope, string]> = [
    ['user', who.user_id],
    ['project', who.project_id],
    ['global', GLOBAL_SCOPE_ID],
  ];
  return scopes.flatMap(([scope, id]) => PERIODS.map((period) => ({ scope, id, period })));
}

/** The block a cell's stored value describes. */
export function toBudgetBlock(cell: BlockCell, raw: string): BudgetBlock {
  let amounts: z.infer<typeof blockValueSchema> = {};
  try {
    amounts = blockValueSchema.parse(JSON.parse(raw));
  } catch {
    // The block itself is what counts; amounts are only for the message.
  }
  return { scope: cell.scope, scope_id: cell.id, period: cell.period, ...amounts };
}

/**
 * The first hard budget that blocks this caller (user, then project, then global), or null:
 * one MGET whatever the number of periods. (The gateway checks the same cells inside its
 * admission script, with the key lookup and the rate limit.)
 */
export async function findBudgetBlock(
  redis: Redis,
  namespace: string,
  who: { user_id: string; project_id: string },
): Promise<BudgetBlock | null> {
  const k = alertingKeys(namespace);
  const cells = blockCells(who);
  const values = await redis.mget(cells.map((c) => k.block(c.scope, c.id, c.period)));
  const hit = values.findIndex((v) => v !== null);
  return hit < 0 ? null : toBudgetBlock(cells[hit]!, values[hit]!);
}

export interface NearBudget {
  scope: BudgetScope;
  scope_id: string;
  period: BudgetPeriod;
  spent_micros: number;
  limit_micros: number;
  used_pct: number;
}

/**
 * The hard budget closest to its limit among the caller's user, project and global budgets when
 * one has reached `ratio` (default 0.8) of its limit, else null. Work that can run cheaper (lower
 * image quality, a smaller model) degrades on it instead of running into the 402.
 */
export async function nearHardBudget(
  redis: Redis,
  namespace: string,
  userId: string,
  projectId: string,
  options: { ratio?: number; now?: number } = {},
): Promise<NearBudget | null> {
  const k = alertingKeys(namespace);
  const pct = Math.round((options.ratio ?? 0.8) * 100);
  const current = periodKeys(options.now ?? Date.now());
  const scopes: Array<[BudgetScope, string]> = [
    ['user', userId],
    ['project', projectId],
    ['global', GLOBAL_SCOPE_ID],
  ];
  const raw = await redis.mget(scopes.flatMap(([s, id]) => [k.budget(s, id), k.budgetRevision(s, id)]));
  const hard = scopes.flatMap(([scope, id], i) =>
    (parseBudgetDoc(raw[2 * i], raw[2 * i + 1])?.periods ?? [])
      .filter((p) => p.mode === 'hard')
      .map((p) => ({ scope, id, budget: p })),
  );
  if (hard.length === 0) return null;
  const spent = await redis.mget(hard.map((h) => k.spent(h.scope, h.id, h.budget.period, current[h.budget.period])));
  let worst: NearBudget | null = null;
  hard.forEach((h, i) => {
    const s = Number(spent[i] ?? 0);
    if (!reachedPct(s, h.budget.limit_micros, pct)) return;
    const used = usedPct(s, h.budget.limit_micros);
    if (!worst || used > worst.used_pct) {
      worst = { scope: h.scope, scope_id: h.id, period: h.budget.period, spent_micros: s, limit_micros: h.budget.limit_micros, used_pct: used };
    }
  });
  return worst;
}
