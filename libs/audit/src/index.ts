export * from './audit-event';
export * from './audit-hash';
export * from './audit.service';
