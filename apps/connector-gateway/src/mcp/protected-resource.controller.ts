import { Controller, Get, Header, Inject, Param } from '@nestjs/common';
import type { Pool } from 'pg';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { PG_POOL } from '@writ/database';
import { CONNECTOR_ID_PATTERN, DPOP_SIGNING_ALGS } from '@writ/oauth';
import { NotFoundError } from '@writ/platform';
import { metadataConnectorId } from './resource-metadata';

/**
 * `GET /.well-known/oauth-protected-resource/connectors/{id}` (RFC 9728): each connector is
 * a protected resource, identified by its gateway URL (the `aud` of its credentials), whose
 * tokens the Writ authorization server issues. Named in every gateway challenge
 * (`resource_metadata`), so MCP clients and other agents can find where to ask. When
 * `WRIT_GATEWAY_URL` has a path (`https://host/gw`), the metadata URL is
 * `https://host/.well-known/oauth-protected-resource/gw/connectors/{id}` (RFC 9728 §3.1): it is
 * served under that path too, for a reverse proxy that routes the host's well-known path to
 * the gateway as it is (see `resourceMetadataUrl`).
 */
@Controller('.well-known/oauth-protected-resource')
export class ProtectedResourceController {
  constructor(
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(PG_POOL) private readonly pool: Pool,
  ) {}

  /** The metadata document of one connector, or `404` (also for a path that names none). */
  @Get('*rest')
  @Header('Cache-Control', 'public, max-age=300')
  async metadata(@Param('rest') rest: string[] | string): Promise<Record<string, unknown>> {
    const id = metadataConnectorId(this.config.gatewayUrl, Array.isArray(rest) ? rest : rest.split('/'));
    const found =
      id !== undefined && CONNECTOR_ID_PATTERN.test(id)
        ? (await this.pool.query<{ name: string }>({ name: 'writ_gateway_resource', text: 'SELECT name FROM connectors WHERE id = $1', values: [id] })).rows[0]
        : undefined;
    if (!found) throw new NotFoundError('connector');
    // No resource_documentation: the only documentation Writ serves is the admin API's, on
    // another service whose URL the gateway does not know (RFC 9728 makes it optional).
    return {
      resource: `${this.config.gatewayUrl}/connectors/${id}`,
      resource_name: found.name,
      authorization_servers: [this.config.issuer],
      bearer_methods_supported: ['header'],
      dpop_signing_alg_values_supported: [...DPOP_SIGNING_ALGS],
      authorization_details_types_supported: ['connector'],
    };
  }
}
