import { ConfigError } from '@tollgate/shared';
import { z } from 'zod';

export interface AlertingSettings {
  /** How often firing alerts are checked for rollover, raised budgets, closed circuits. */
  sweepIntervalMs: number;
  /** A circuit open this long raises an alert. */
  circuitOpenSeconds: number;
  /** Errors of one service and category in `errorWindowMs` that raise an alert; it resolves below half. */
  errorRateThreshold: number;
  errorWindowMs: number;
  /** Approximate cap of the alerts stream (XADD MAXLEN ~). */
  streamMaxLen: number;
  /** How long resolved alerts stay queryable. */
  historyRetentionDays: number;
  webhook: { attempts: number; backoffMs: number; timeoutMs: number; concurrency: number };
}

export const DEFAULT_SETTINGS: AlertingSettings = {
  sweepIntervalMs: 1_000,
  circuitOpenSeconds: 60,
  errorRateThreshold: 30,
  errorWindowMs: 60_000,
  streamMaxLen: 10_000,
  historyRetentionDays: 30,
  webhook: { attempts: 6, backoffMs: 1_000, timeoutMs: 5_000, concurrency: 8 },
};

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .regex(/^\d+$/, 'expected a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .optional();

const EnvSchema = z.object({
  ALERT_SWEEP_INTERVAL_MS: int(10, 60_000),
  ALERT_CIRCUIT_OPEN_SECONDS: int(1),
  ALERT_ERROR_RATE_PER_MINUTE: int(1),
  ALERTS_STREAM_MAX_LEN: int(100),
  ALERT_HISTORY_DAYS: int(1, 3650),
  ALERT_WEBHOOK_ATTEMPTS: int(1, 50),
  ALERT_WEBHOOK_BACKOFF_MS: int(1),
  ALERT_WEBHOOK_TIMEOUT_MS: int(100, 120_000),
});

/** The alerting service's own variables (the shared ones come from `loadConfig`); every bad one is listed at once. */
export function loadAlertingSettings(env: NodeJS.ProcessEnv = process.env): AlertingSettings {
  const input: Record<string, string> = {};
  for (const key of Object.keys(EnvSchema.shape)) {
    const value = env[key]?.trim();
    if (value) input[key] = value;
  }
  const parsed = EnvSchema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => ({ variable: String(i.path[0]), message: i.message })));
  }
  const e = parsed.data;
  const d = DEFAULT_SETTINGS;
  return {
    sweepIntervalMs: e.ALERT_SWEEP_INTERVAL_MS ?? d.sweepIntervalMs,
    circuitOpenSeconds: e.ALERT_CIRCUIT_OPEN_SECONDS ?? d.circuitOpenSeconds,
    errorRateThreshold: e.ALERT_ERROR_RATE_PER_MINUTE ?? d.errorRateThreshold,
    errorWindowMs: d.errorWindowMs,
    streamMaxLen: e.ALERTS_STREAM_MAX_LEN ?? d.streamMaxLen,
    historyRetentionDays: e.ALERT_HISTORY_DAYS ?? d.historyRetentionDays,
    webhook: {
      attempts: e.ALERT_WEBHOOK_ATTEMPTS ?? d.webhook.attempts,
      backoffMs: e.ALERT_WEBHOOK_BACKOFF_MS ?? d.webhook.backoffMs,
      timeoutMs: e.ALERT_WEBHOOK_TIMEOUT_MS ?? d.webhook.timeoutMs,
      concurrency: d.webhook.concurrency,
    },
  };
}
