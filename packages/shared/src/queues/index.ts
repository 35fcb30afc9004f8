export * from './partitions';
export * from './partitioned-queue';
export * from './partitioned-worker';
export * from './supervised-worker';
