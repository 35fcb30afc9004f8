export * from './model';
export * from './engine';
export * from './store';
export * from './snapshot';
export * from './exposure';
export * from './openfeature';
export * from './product';
export * from './admin';
