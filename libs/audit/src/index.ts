export * from './audit-event';
export * from './audit-hash';
export * from './audit.service';
export * from './audit-checkpoint';
export * from './audit-checkpointer';
export * from './audit-prune';
export * from './audit-archive';
export * from './audit-export';
