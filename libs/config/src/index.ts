export * from './writ-config';
export * from './config.module';
