// Budgets, alerts and webhook targets: the Redis contract between the alerting service and the gateway.
export * from './keys';
export * from './budgets';
export * from './alerts';
export * from './silences';
