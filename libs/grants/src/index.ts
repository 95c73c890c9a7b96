export * from './task-limits';
export * from './budget-coverage';
export * from './grant-store';
export * from './credential-revoker';
export * from './task-view';
export * from './approval-store';
export * from './grant-state.repository';
export * from './grant-floor';
