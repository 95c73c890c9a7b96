export * from './client-keys';
export * from './test-database';
export * from './scratch-postgres';
export * from './payments-connector';
export * from './free-port';
export * from './lock-waiter';
export * from './tar-gz';
export * from './spinning-policy';
