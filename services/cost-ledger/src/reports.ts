import type { Job, Queue } from 'bullmq';
import type Redis from 'ioredis';
import {
  AnalyticsReader,
  type CostReport,
  HEADLINE,
  type EventBus,
  type LedgerReader,
  ledgerKeys,
  periodBounds,
  periodKey,
  previousPeriodKey,
  SupervisedWorker,
  QUEUES,
  queuePrefix,
  type ReportJob,
  reportJobSchema,
} from '@tollgate/shared';

/** Five minutes past each close (UTC): late entries of the closed period have landed by then. */
const SCHEDULES: Array<{ id: string; period: ReportJob['period']; pattern: string }> = [
  { id: 'daily-report', period: 'day', pattern: '5 0 * * *' },
  { id: 'weekly-report', period: 'week', pattern: '5 0 * * 1' },
  { id: 'monthly-report', period: 'month', pattern: '5 0 1 * *' },
];

/** Repeatable jobs at period close; upsert keeps one schedule however many instances start. */
export async function scheduleReports(queue: Queue<ReportJob, CostReport>): Promise<void> {
  for (const s of SCHEDULES) {
    await queue.upsertJobScheduler(s.id, { pattern: s.pattern, tz: 'UTC' }, { name: 'report', data: { period: s.period } });
  }
}

/**
 * The latency, error and conversion sections of a report: the analytics day rollups of the same
 * period (kept two years), so a report of a closed period is built without any raw event.
 */
async function reportAnalytics(deps: { redis: Redis; namespace: string }, period: ReportJob['period'], key: string): Promise<CostReport['analytics']> {
  const { start, end } = periodBounds(period, key);
  const base = { filters: {}, from: start.getTime(), to: end.getTime(), granularity: 'day', limit: 50, series: false } as const;
  const [total, byModel, byOperation] = await new AnalyticsReader(deps.redis, deps.namespace, () => end.getTime()).queryMany(base, [
    { group_by: [], metrics: HEADLINE },
    { group_by: ['provider', 'model'], metrics: ['completed', 'failed', 'error_rate', 'latency_p50', 'latency_p95', 'latency_p99', 'ttft_p50', 'ttft_p95', 'fallback_rate', 'cost_per_success_micros'] },
    { group_by: ['operation'], metrics: ['started', 'completed', 'conversion_rate'] },
  ]);
  return {
    totals: total!.groups[0]?.totals ?? {},
    by_model: byModel!.groups.filter((g) => g.key.model !== null).map((g) => ({ ...g.key, ...g.totals })),
    conversion: byOperation!.groups.filter((g) => g.key.operation !== null).map((g) => ({ workflow: g.key.operation ?? null, ...g.totals })),
  };
}

/** Builds a period's report from the aggregates, stores it and announces it. */
export async function buildReport(job: ReportJob, deps: { reader: LedgerReader; redis: Redis; bus: EventBus; namespace: string }, now = new Date()): Promise<CostReport> {
  const key = job.period_key ?? previousPeriodKey(job.period, periodKey(job.period, now));
  const report: CostReport = { ...(await deps.reader.report(job.period, key)), analytics: await reportAnalytics(deps, job.period, key) };
  await deps.redis.set(ledgerKeys(deps.namespace).report(job.period, key), JSON.stringify(report));
  await deps.bus.publish(
    'cost.report_generated',
    { period: job.period, period_key: key, total_micros: report.total.micros, previous_total_micros: report.previous_total.micros, entries: report.entries },
    { correlation_id: `report-${job.period}-${key}` },
  );
  return report;
}

export function createReportWorker(
  deps: { reader: LedgerReader; redis: Redis; bus: EventBus; namespace: string },
  connection: Redis,
): SupervisedWorker<ReportJob, CostReport> {
  return new SupervisedWorker<ReportJob, CostReport>(
    QUEUES.reports,
    (job: Job<ReportJob>) => buildReport(reportJobSchema.parse(job.data), deps),
    { connection, prefix: queuePrefix(deps.namespace), concurrency: 1 },
  );
}
