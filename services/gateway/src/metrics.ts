import type { RequestHandler } from 'express';
import type Redis from 'ioredis';
import { type BreakerState, type ErrorRateTracker, EventTail, type JobCountSource } from '@tollgate/shared';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface GatewayMetrics {
  registry: Registry;
  middleware: RequestHandler;
  /** Latest known breaker states, fed from `circuit.*` events. */
  breakers: Map<string, BreakerState>;
  /** Budget holds given back because their request died before it ended them. */
  holdsExpired: Counter;
}

const STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 0.5, open: 1 };

/** Prometheus metrics for one gateway: its HTTP traffic, the queues it feeds, breaker states and error rates. */
export function createMetrics(queues: readonly JobCountSource[], errorRates: ErrorRateTracker): GatewayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tollgate_gateway_' });
  const breakers = new Map<string, BreakerState>();

  const requests = new Counter({
    name: 'tollgate_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'tollgate_http_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['method', 'route'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  new Gauge({
    name: 'tollgate_queue_jobs',
    help: 'Jobs in each queue by state (a partitioned queue summed over its partitions)',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const q of queues) {
        const counts = await q.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed');
        for (const [state, n] of Object.entries(counts)) this.set({ queue: q.name, state }, n);
      }
    },
  });
  new Gauge({
    name: 'tollgate_circuit_state',
    help: 'Provider circuit breakers: 0 closed, 0.5 half-open, 1 open',
    labelNames: ['breaker'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [breaker, state] of breakers) this.set({ breaker }, STATE_VALUE[state]);
    },
  });
  new Gauge({
    name: 'tollgate_errors_in_window',
    help: 'Errors per service and category over the last minute',
    labelNames: ['service', 'category'],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of errorRates.snapshot()) this.set({ service: e.service, category: e.category }, e.errors);
    },
  });
  new Gauge({
    name: 'tollgate_error_ratio',
    help: 'Share of a service\'s outcomes in the last minute that were errors of this category',
    labelNames: ['service', 'category'],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of errorRates.snapshot()) this.set({ service: e.service, category: e.category }, e.ratio);
    },
  });

  const middleware: RequestHandler = (req, res, next) => {
    const end = latency.startTimer();
    res.on('finish', () => {
      // The matched route pattern, not the raw path, keeps label cardinality bounded.
      const route = (req.route?.path as string | undefined) ?? 'unmatched';
      requests.inc({ method: req.method, route, status: String(res.statusCode) });
      end({ method: req.method, route });
    });
    next();
  };

  const holdsExpired = new Counter({
    name: 'tollgate_budget_holds_expired_total',
    help: 'Budget holds given back at expiry because their request died (gateway or worker killed)',
    registers: [registry],
  });

  return { registry, middleware, breakers, holdsExpired };
}

/** Feeds breaker states and error rates from the bus as the services report them. */
export function followServiceHealth(
  redis: Redis,
  namespace: string,
  metrics: GatewayMetrics,
  errorRates: ErrorRateTracker,
  /** Also hands on `flags.changed`, so the flag snapshot needs no tail of its own. */
  onFlagsChanged?: (version: number) => void,
  /** The bus's partitions, as the services use them. */
  busPartitions = 1,
): EventTail {
  // Counters for /metrics: reading every 50 ms at most is live enough, and keeps this tail from
  // waking the gateway for each event of each request.
  const types = ['circuit.*', 'error.occurred', 'workflow.completed', ...(onFlagsChanged ? ['flags.changed'] : [])];
  return new EventTail({ redis, prefix: namespace, partitions: busPartitions, types, lingerMs: 50 }, (event) => {
    if (event.type === 'flags.changed') return onFlagsChanged?.(event.data.version);
    if (event.type === 'circuit.opened') metrics.breakers.set(event.data.breaker, 'open');
    else if (event.type === 'circuit.closed') metrics.breakers.set(event.data.breaker, 'closed');
    else if (event.type === 'error.occurred') errorRates.recordError(event.data.service, event.data.category);
    else if (event.type === 'workflow.completed') errorRates.recordSuccess(event.source);
  });
}
