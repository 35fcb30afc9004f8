import type Redis from 'ioredis';
import { type AlertingKeys, type BudgetScope, GLOBAL_SCOPE_ID } from '@tollgate/shared';

/**
 * A sweep reloads the index at least this often even when the version did not move: a budget
 * written by a build that does not bump it (during a rolling deploy), or a version that went back
 * (a Redis restored from an older copy), is picked up within this time.
 */
export const FULL_RELOAD_MS = 60_000;

/** One reading of the budget index: which scopes had a budget as of `version`. Never changes. */
export class BudgetView {
  constructor(
    /** null before the first load. */
    readonly version: string | null,
    private readonly members: ReadonlySet<string>,
    /** The global scope always has a budget when the config gives defaults. */
    private readonly globalDefaults: boolean,
  ) {}

  has(scope: BudgetScope, scopeId: string): boolean {
    if (scope === 'global') return this.globalDefaults || this.members.has(`global:${GLOBAL_SCOPE_ID}`);
    return this.members.has(`${scope}:${scopeId}`);
  }

  /** True when this reading is of version `seen` (read in Redis); any other version, even a lower one, means reload. */
  isAt(seen: string): boolean {
    return this.version === seen;
  }
}

/**
 * Which scopes have a budget, held in memory so that a cost event costs no Redis command for the
 * scopes that have none (most users and projects). The set is the budget index
 * (`alertingKeys(ns).budgetIndex`); the budget write bumps `budgetIndexVersion` in the same script
 * whenever a scope joins or leaves it, and every evaluation reads that version in its own script.
 * So a reading that missed a change is noticed by the next event (or sweep) and reloaded, and what
 * a stale reading skipped before the change is covered by the budget write itself: it starts the
 * new scope's spend from the ledger, which had every entry already published.
 */
export class BudgetIndex {
  private current: BudgetView;
  private loading?: Promise<void>;
  private loadedAt = -Infinity;

  constructor(
    private readonly redis: Redis,
    private readonly keys: AlertingKeys,
    private readonly globalDefaults: boolean,
    private readonly clock: () => number = Date.now,
  ) {
    this.current = new BudgetView(null, new Set(), globalDefaults);
  }

  /** The latest reading; decide with one reading and compare versions against that same one. */
  view(): BudgetView {
    return this.current;
  }

  async readVersion(): Promise<string> {
    return (await this.redis.get(this.keys.budgetIndexVersion)) ?? '0';
  }

  /** A reading at least as new as the moment `seen` was read; concurrent callers share reloads. */
  async catchUp(seen: string): Promise<BudgetView> {
    // A reload already under way may have read the version before `seen` was: wait for it, and
    // if it did not land on `seen`, load again (that one starts after `seen` was read).
    await this.loading?.catch(() => undefined);
    if (!this.current.isAt(seen)) await this.reload();
    return this.current;
  }

  /** For the sweeper: reloads when the version moved, or when the last load is old (see FULL_RELOAD_MS). */
  async refresh(): Promise<void> {
    const seen = await this.readVersion();
    if (!this.current.isAt(seen) || this.clock() - this.loadedAt >= FULL_RELOAD_MS) await this.reload();
  }

  reload(): Promise<void> {
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async load(): Promise<void> {
    // The version first: a set read after it can only be newer than it says, never older, so a
    // change that lands in between is seen again as a newer version and reloaded.
    const res = (await this.redis.pipeline().get(this.keys.budgetIndexVersion).smembers(this.keys.budgetIndex).exec()) ?? [];
    const [verErr, ver] = res[0] ?? [];
    const [setErr, members] = res[1] ?? [];
    if (verErr) throw verErr;
    if (setErr) throw setErr;
    this.current = new BudgetView(typeof ver === 'string' ? ver : '0', new Set(members as string[]), this.globalDefaults);
    this.loadedAt = this.clock();
  }
}
