import { createLogger, createRedis, hashTagged, loadConfig, onShutdown, startHealthServer } from '@tollgate/shared';
import { SERVICE, startAlerting } from './service';
import { loadAlertingSettings } from './settings';

async function main(): Promise<void> {
  const config = loadConfig();
  const settings = loadAlertingSettings();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  // Auto-pipelining sends the scripts of concurrently handled events in one round trip.
  const redis = createRedis(config.redisUrl, { logger, name: SERVICE, enableAutoPipelining: true });
  const alerting = await startAlerting({
    redis,
    redisUrl: config.redisUrl,
    namespace: hashTagged(config.prefix),
    budgets: config.budgets,
    settings,
    logger,
    bus: { maxLen: config.bus.maxLen, maxDeliveries: config.bus.maxDeliveries, claimIdleMs: config.bus.claimIdleMs, partitions: config.bus.partitions },
  });
  logger.info('alerting ready', {
    sweep_ms: settings.sweepIntervalMs,
    circuit_open_s: settings.circuitOpenSeconds,
    error_rate_per_window: settings.errorRateThreshold,
  });

  // Probes (containers set HEALTH_PORT): /healthz, /readyz (Redis answers), /metrics.
  const health = config.health && (await startHealthServer({ service: SERVICE, ...config.health, redis, logger }));

  onShutdown(logger, [
    ['health server', () => health?.close()],
    ['alerting', () => alerting.stop()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`alerting failed to start: ${(err as Error).message}`);
  process.exit(1);
});
