import type { FactoryProvider } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import { RUNTIME, type Runtime } from '@writ/platform';
import { ConnectedAccounts } from './connected-accounts';
import { UpstreamOAuthClient } from './upstream-oauth-client';
import { UserTokenVerifier } from './user-token-verifier';

/** Where users' browsers come back from the provider: the authorization server's callback. */
export function connectCallbackUrl(issuer: string): string {
  return `${issuer}/connect/callback`;
}

/** {@link ConnectedAccounts} over the runtime and a guarded dispatcher (by its injection token). */
export function connectedAccountsProvider(dispatcher: symbol): FactoryProvider<ConnectedAccounts> {
  return {
    provide: ConnectedAccounts,
    useFactory: (runtime: Runtime, upstream: Dispatcher) =>
      new ConnectedAccounts(
        runtime.pool,
        runtime.audit,
        runtime.masterKey,
        new UpstreamOAuthClient(upstream),
        connectCallbackUrl(runtime.config.issuer),
        `${runtime.config.issuer}/connect/`,
      ),
    inject: [RUNTIME, dispatcher],
  };
}

/** {@link UserTokenVerifier} over the runtime's pool and a guarded dispatcher (by its injection token). */
export function userTokenVerifierProvider(dispatcher: symbol): FactoryProvider<UserTokenVerifier> {
  return {
    provide: UserTokenVerifier,
    useFactory: (runtime: Runtime, upstream: Dispatcher) => new UserTokenVerifier(runtime.pool, upstream, runtime.rowIntegrity),
    inject: [RUNTIME, dispatcher],
  };
}
