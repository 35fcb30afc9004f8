import { createLogger, createRedis, hashTagged, loadConfig, onShutdown } from '@tollgate/shared';
import { SERVICE, startAlerting } from './service';
import { loadAlertingSettings } from './settings';

async function main(): Promise<void> {
  const config = loadConfig();
  const settings = loadAlertingSettings();
  const logger = createLogger(SERVICE, { level: config.logLevel });
  const redis = createRedis(config.redisUrl, { name: SERVICE });
  const alerting = await startAlerting({
    redis,
    redisUrl: config.redisUrl,
    namespace: hashTagged(config.prefix),
    budgets: config.budgets,
    settings,
    logger,
    bus: { maxLen: config.bus.maxLen, maxDeliveries: config.bus.maxDeliveries, claimIdleMs: config.bus.claimIdleMs },
  });
  logger.info('alerting ready', {
    sweep_ms: settings.sweepIntervalMs,
    circuit_open_s: settings.circuitOpenSeconds,
    error_rate_per_window: settings.errorRateThreshold,
  });

  onShutdown(logger, [
    ['alerting', () => alerting.stop()],
    ['redis', () => redis.quit()],
  ]);
}

main().catch((err) => {
  console.error(`alerting failed to start: ${(err as Error).message}`);
  process.exit(1);
});
