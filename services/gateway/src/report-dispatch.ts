import type { Queue, QueueEvents } from 'bullmq';
import type Redis from 'ioredis';
import { type CostReport, ledgerKeys, type Period, periodBounds, periodKey, type ReportJob, reportJobId } from '@tollgate/shared';
import { ApiError } from './errors';

/**
 * Cost reports: a closed period's stored report when the ledger has made one, otherwise a job
 * for the cost-ledger's report worker, which builds, stores and announces it.
 */
export class ReportDispatcher {
  constructor(
    private readonly queue: Queue<ReportJob, CostReport>,
    private readonly events: QueueEvents,
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly timeoutMs = 15_000,
  ) {}

  async get(period: Period, at: Date): Promise<CostReport> {
    const key = periodKey(period, at);
    const closed = periodBounds(period, key).end.getTime() <= Date.now();
    if (closed) {
      const stored = await this.redis.get(ledgerKeys(this.namespace).report(period, key));
      if (stored) return JSON.parse(stored) as CostReport;
    }
    // A period still open is built fresh each time; a closed one once, however many ask at once.
    const jobId = closed ? reportJobId(period, key) : `${reportJobId(period, key)}-${Date.now()}`;
    const job = await this.queue.add('report', { period, period_key: key }, { jobId, removeOnComplete: { age: 60 }, removeOnFail: { age: 3600 } });
    try {
      return await job.waitUntilFinished(this.events, this.timeoutMs);
    } catch (err) {
      if (String((err as Error).message).includes('timed out')) {
        throw new ApiError('provider_unavailable', 'The cost report could not be built in time: is the cost-ledger service running?');
      }
      throw err;
    }
  }
}
