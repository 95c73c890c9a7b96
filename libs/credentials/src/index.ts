export * from './credential-revoker';
export * from './task-view';
export * from './approval-store';
export * from './pg-jti-store';
export * from './dpop-proof-check';
