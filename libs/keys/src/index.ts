export * from './master-key';
export * from './signing-key-store';
