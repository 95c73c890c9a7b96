import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { PG_POOL } from '@writ/database';
import { authenticateClientAssertion, authorizationHeaderRefused, clientAuthenticationFailed, FormParams, type JtiStore } from '@writ/oauth';
import { ClientRegistry } from './client-registry.service';
import { PgJtiStore } from '@writ/credentials';
import type { RegisteredClient } from './registered-client';
import { ClaimedJti, ClientAssertionJti } from './client-assertion-jti';

/**
 * `private_key_jwt` client authentication for the token, introspection and revocation
 * endpoints: the claimed client must exist and be active, the assertion must verify against
 * its registered JWKS, and its `jti` is consumed in PostgreSQL.
 */
@Injectable()
export class ClientAuthenticator {
  private readonly jtis: PgJtiStore;

  constructor(
    private readonly clients: ClientRegistry,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(PG_POOL) pool: Pool,
  ) {
    this.jtis = new PgJtiStore(pool);
  }

  /**
   * Authenticates the client of a request; throws `invalid_client` otherwise. `fresh` reads the
   * registration from PostgreSQL, for endpoints that act on it without a version check
   * (introspection, revocation): a key removed or a client suspended on any instance is refused
   * as soon as the change is committed.
   */
  async authenticate(params: FormParams, authorizationHeader?: string, fresh = false): Promise<RegisteredClient> {
    return this.authenticateWith(params, authorizationHeader, this.jtis, fresh);
  }

  /** Whether the registration this client was authenticated with is still the current one (read fresh). */
  async isCurrent(client: RegisteredClient): Promise<boolean> {
    return (await this.clients.find(client.id, true))?.version === client.version;
  }

  /**
   * Authenticates again, on a fresh read of the registration, a request whose credential was not
   * recorded because the registration it was authenticated against changed meanwhile. Its
   * assertion's `jti` is this request's own (spent by it or still held by it): not spent again.
   */
  async reauthenticate(params: FormParams, authorizationHeader: string | undefined, clientId: string): Promise<RegisteredClient> {
    this.clients.forget(clientId);
    return this.authenticateWith(params, authorizationHeader, { consume: async () => true }, true);
  }

  /**
   * Authenticates the client like {@link authenticate}, but leaves its assertion's `jti` to be
   * spent by the caller, with what the request records (see {@link ClientAssertionJti}).
   */
  async authenticateDeferringJti(params: FormParams, authorizationHeader?: string): Promise<{ client: RegisteredClient; jti: ClientAssertionJti }> {
    let claimed: ClaimedJti | undefined;
    const client = await this.authenticateWith(params, authorizationHeader, {
      consume: async (clientId, jti, expiresAt) => {
        claimed = { clientId, jti, expiresAt };
        return true;
      },
    });
    return { client, jti: new ClientAssertionJti(claimed!, this.jtis) };
  }

  private async authenticateWith(params: FormParams, authorizationHeader: string | undefined, jtiStore: JtiStore, fresh = false): Promise<RegisteredClient> {
    if (authorizationHeader) throw authorizationHeaderRefused(authorizationHeader);
    let client: RegisteredClient | undefined;
    await authenticateClientAssertion({
      params,
      issuer: this.config.issuer,
      jtiStore,
      ecdsaOnThreadPool: this.config.operations.ecdsa === 'thread-pool',
      loadJwks: async (clientId) => {
        client = await this.clients.find(clientId, fresh);
        if (!client) return undefined;
        if (client.status !== 'active') throw clientAuthenticationFailed('client_inactive');
        return client.jwks;
      },
    });
    return client!;
  }

  /** Purges used jtis past their retention. */
  purgeExpiredJtis(): Promise<number> {
    return this.jtis.purgeExpired();
  }
}
