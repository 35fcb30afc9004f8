import { type Job, type Queue, Worker } from 'bullmq';
import type Redis from 'ioredis';
import {
  type CostReport,
  type EventBus,
  type LedgerReader,
  ledgerKeys,
  periodKey,
  previousPeriodKey,
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

/** Builds a period's report from the aggregates, stores it and announces it. */
export async function buildReport(job: ReportJob, deps: { reader: LedgerReader; redis: Redis; bus: EventBus; namespace: string }, now = new Date()): Promise<CostReport> {
  const key = job.period_key ?? previousPeriodKey(job.period, periodKey(job.period, now));
  const report = await deps.reader.report(job.period, key);
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
): Worker<ReportJob, CostReport> {
  return new Worker<ReportJob, CostReport>(
    QUEUES.reports,
    (job: Job<ReportJob>) => buildReport(reportJobSchema.parse(job.data), deps),
    { connection, prefix: queuePrefix(deps.namespace), concurrency: 1 },
  );
}
