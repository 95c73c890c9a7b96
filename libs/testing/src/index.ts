export * from './client-keys';
export * from './test-database';
