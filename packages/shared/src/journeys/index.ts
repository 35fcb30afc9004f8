export * from './schema';
export * from './journey-store';
export * from './examples';
