export * from './credential-revoker';
export * from './task-view';
export * from './approval-store';
