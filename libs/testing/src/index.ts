export * from './client-keys';
export * from './test-database';
export * from './scratch-postgres';
