export * from './partitions';
export * from './partitioned-queue';
export * from './partitioned-worker';
