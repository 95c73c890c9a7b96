import { Controller, Get, Header, Inject } from '@nestjs/common';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { CLIENT_ASSERTION_SIGNING_ALGS, DPOP_SIGNING_ALGS } from '@writ/oauth';
import { GrantRegistry } from '../token/grant-registry';

/** `GET /.well-known/oauth-authorization-server` (RFC 8414). */
@Controller('.well-known')
export class DiscoveryController {
  constructor(
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    private readonly grants: GrantRegistry,
  ) {}

  /** The authorization server metadata. */
  @Get('oauth-authorization-server')
  @Header('Cache-Control', 'public, max-age=300')
  metadata(): Record<string, unknown> {
    const issuer = this.config.issuer;
    return {
      issuer,
      token_endpoint: `${issuer}/oauth2/token`,
      introspection_endpoint: `${issuer}/oauth2/introspect`,
      revocation_endpoint: `${issuer}/oauth2/revoke`,
      jwks_uri: `${issuer}/oauth2/jwks`,
      grant_types_supported: this.grants.grantTypes(),
      response_types_supported: [],
      scopes_supported: ['tasks'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: [...CLIENT_ASSERTION_SIGNING_ALGS],
      introspection_endpoint_auth_methods_supported: ['private_key_jwt'],
      introspection_endpoint_auth_signing_alg_values_supported: [...CLIENT_ASSERTION_SIGNING_ALGS],
      revocation_endpoint_auth_methods_supported: ['private_key_jwt'],
      revocation_endpoint_auth_signing_alg_values_supported: [...CLIENT_ASSERTION_SIGNING_ALGS],
      authorization_details_types_supported: ['connector'],
      dpop_signing_alg_values_supported: [...DPOP_SIGNING_ALGS],
      // No service_documentation (optional, RFC 8414): the authorization server serves no
      // documentation; the admin API's OpenAPI is on another service whose URL it does not know.
    };
  }
}
