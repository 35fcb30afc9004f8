export * from './cache-key';
export * from './cache-control';
export * from './cache-settings';
export * from './response-cache';
export * from './cache-job';
