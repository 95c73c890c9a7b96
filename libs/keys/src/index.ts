export * from './master-key';
export * from './signing-key-store';
export * from './checkpoint-signing-key';
export * from './sealed-rewrap';
