export * from './task-limits';
export * from './budget-coverage';
export * from './grant-store';
