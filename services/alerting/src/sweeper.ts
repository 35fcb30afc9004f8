import type Redis from 'ioredis';
import { type CostAlert, type OpsAlert, periodBounds, splitMember } from '@tollgate/shared';
import type { AlertLog } from './alert-log';
import type { CostEvaluator } from './cost-alerts';
import type { OpsAlerts } from './ops-alerts';

export interface SweeperDeps {
  redis: Redis;
  log: AlertLog;
  costs: CostEvaluator;
  ops: OpsAlerts;
  intervalMs: number;
  now: () => number;
  logger?: { warn(message: string, meta?: Record<string, unknown>): unknown };
}

/**
 * What no event announces: a period rolling over, a budget changed through the API, a circuit
 * staying open. Every instance sweeps; the transitions are compare-and-set in Redis, so two
 * sweeps at once resolve or fire each alert once.
 */
export class Sweeper {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;

  constructor(private readonly deps: SweeperDeps) {}

  start(): void {
    this.timer ??= setInterval(() => void this.tick(), this.deps.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One sweep; concurrent calls share the one in progress. */
  tick(): Promise<void> {
    this.running ??= this.sweep()
      .catch((err) => void this.deps.logger?.warn('alerting: sweep failed', { error: (err as Error).message }))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async sweep(): Promise<void> {
    const { redis, log, costs, ops } = this.deps;
    // An instance with no cost events to read still learns of budgets that appeared or went.
    await costs.refreshBudgetIndex();
    const dirty = ((await redis.spop(log.keys.budgetDirty, 100)) ?? []) as string[];
    const changed = new Set(dirty);
    const now = this.deps.now();
    // Resolve before re-deciding: a raised budget first moves its windows back, then whatever the
    // new budget's thresholds say is crossed can fire at once. Only budget alerts whose period
    // ended or whose budget changed can have lost their reason, so the rest are not looked at.
    const firing = await log.firing();
    await costs.resolveStale(
      firing.filter(
        (a): a is CostAlert =>
          a.kind === 'cost' && (now >= periodBounds(a.period, a.period_key).end.getTime() || changed.has(`${a.scope}:${a.scope_id}`)),
      ),
    );
    await ops.resolveStale(firing.filter((a): a is OpsAlert => a.kind === 'ops'));
    for (const member of dirty) {
      const [scope, scopeId] = splitMember(member);
      try {
        await costs.reevaluateScope(scope, scopeId);
      } catch (err) {
        await redis.sadd(log.keys.budgetDirty, member);
        throw err;
      }
    }
    await ops.checkCircuits(new Set(await log.firingFingerprints()));
  }
}
