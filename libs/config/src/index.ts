export * from './writ-config';
export * from './config.module';
export * from './known-variables';
