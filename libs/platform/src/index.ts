export * from './http-app';
export * from './http-exception.filter';
export * from './logger';
export * from './runtime';
export * from './runtime.module';
export * from './validation.pipe';
export * from './health.module';
export * from './run-main';
