export * from './entities';
export * from './migrations';
export * from './data-source';
export * from './database.module';
export * from './embedded-postgres';
export * from './checked-out-client';
export * from './service-login';
export * from './audited-transaction';
