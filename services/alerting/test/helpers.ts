import type Redis from 'ioredis';
import {
  type AlertRecord,
  alertingKeys,
  createRedis,
  type EventBus,
  type EventData,
  parseAlertEntry,
  periodKeys,
} from '@tollgate/shared';
import { TEST_REDIS_URL } from '@tollgate/shared/src/testing';
import { type AlertingDeps, startAlerting } from '../src/service';
import { DEFAULT_SETTINGS, type AlertingSettings } from '../src/settings';

/** No global defaults: tests set the budgets they mean. */
export const NO_DEFAULTS = { dailyMicros: 0, weeklyMicros: 0, monthlyMicros: 0, thresholdsPercent: [50, 80, 100] };

export const TEST_SETTINGS: AlertingSettings = {
  ...DEFAULT_SETTINGS,
  sweepIntervalMs: 50,
  webhook: { attempts: 3, backoffMs: 20, timeoutMs: 1_000, concurrency: 4 },
};

/** One alerting instance on its own connection, as a separate process would have. */
export async function startTestAlerting(namespace: string, overrides: Partial<AlertingDeps> = {}) {
  const redis = createRedis(TEST_REDIS_URL, { name: 'test-alerting' });
  const service = await startAlerting({
    redis,
    redisUrl: TEST_REDIS_URL,
    namespace,
    budgets: NO_DEFAULTS,
    settings: TEST_SETTINGS,
    bus: { claimIdleMs: 2_000, blockMs: 200 },
    ...overrides,
  });
  return {
    ...service,
    redis,
    async close() {
      await service.stop();
      await redis.quit();
    },
  };
}
export type TestAlerting = Awaited<ReturnType<typeof startTestAlerting>>;

export interface CostSpec {
  entryId: string;
  amount: number;
  /** Running totals per scope for the period(s) given. */
  totals: Array<{ scope: 'global' | 'user' | 'project'; scope_id: string; spent: number; period?: 'day' | 'week' | 'month'; period_key?: string }>;
  at?: number;
  model?: string;
}

export function costData(spec: CostSpec): EventData<'cost.recorded'> {
  const at = spec.at ?? Date.now();
  const keys = periodKeys(at);
  return {
    entry_id: spec.entryId,
    usage_event_id: `usage-${spec.entryId}`,
    amount_micros: spec.amount,
    price_version: '2026-01-01',
    provider: 'openai',
    model: spec.model ?? 'gpt-4o-mini',
    service: 'chat-workflow',
    operation: 'chat',
    units: { input_tokens: 10, output_tokens: 10 },
    cached: false,
    occurred_at: new Date(at).toISOString(),
    totals: spec.totals.map((t) => ({
      scope: t.scope,
      scope_id: t.scope_id,
      period: t.period ?? 'day',
      period_key: t.period_key ?? keys[t.period ?? 'day'],
      spent_micros: t.spent,
    })),
  };
}

export async function publishCost(bus: EventBus, spec: CostSpec, correlationId = `req-${spec.entryId}`): Promise<void> {
  await bus.publish('cost.recorded', costData(spec), { correlation_id: correlationId });
}

/** Every notice on the alerts stream, oldest first. */
export async function alertNotices(redis: Redis, namespace: string): Promise<Array<{ streamId: string; alert: AlertRecord }>> {
  const entries = (await redis.xrange(alertingKeys(namespace).alertsStream, '-', '+')) as Array<[string, string[]]>;
  return entries.map(([id, fields]) => parseAlertEntry(id, fields)).filter((e): e is NonNullable<typeof e> => e !== null);
}

/** True once a consumer group has read the whole stream and acked everything. */
export async function groupDrained(redis: Redis, stream: string, group: string): Promise<boolean> {
  const [last] = (await redis.xrevrange(stream, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
  const groups = (await redis.xinfo('GROUPS', stream)) as unknown[][];
  for (const g of groups) {
    const info = new Map<string, unknown>();
    for (let i = 0; i < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
    if (info.get('name') !== group) continue;
    return Number(info.get('pending')) === 0 && (!last || info.get('last-delivered-id') === last[0]);
  }
  return false;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
