// The guarded upstream dispatcher lives in @writ/connectors so that the authorization server
// (connected accounts: token, revocation and JWKS endpoints) uses the same destination checks.
export * from '@writ/connectors';
