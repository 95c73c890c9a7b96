export * from './credential-revoker';
export * from './task-view';
