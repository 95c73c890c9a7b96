export * from './pg-jti-store';
export * from './dpop-proof-check';
