import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { PG_POOL } from '@writ/database';
import { authenticateClientAssertion, clientAuthenticationFailed, FormParams, type JtiStore } from '@writ/oauth';
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

  /** Authenticates the client of a request; throws `invalid_client` otherwise. */
  async authenticate(params: FormParams, authorizationHeader?: string): Promise<RegisteredClient> {
    return this.authenticateWith(params, authorizationHeader, this.jtis);
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

  private async authenticateWith(params: FormParams, authorizationHeader: string | undefined, jtiStore: JtiStore): Promise<RegisteredClient> {
    if (authorizationHeader) throw clientAuthenticationFailed('client_auth_unsupported');
    let client: RegisteredClient | undefined;
    await authenticateClientAssertion({
      params,
      issuer: this.config.issuer,
      jtiStore,
      loadJwks: async (clientId) => {
        client = await this.clients.find(clientId);
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
