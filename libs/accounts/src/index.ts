export * from './account-errors';
export * from './connected-accounts';
export * from './upstream-oauth-client';
export * from './user-token-verifier';
export * from './accounts.providers';
export * from './master-key-rewrap';
