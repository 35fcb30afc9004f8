export * from './schema';
export * from './metrics';
export * from './reader';
export * from './funnel';
