import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { ConnectedAccounts } from '@writ/accounts';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import {
  ConnectorFieldError,
  ConnectorKind,
  ConnectorOperationDefinition,
  ConnectorValidationResult,
  destinationErrors,
  sealCredential,
  unsealCredential,
  type UpstreamCredential,
  UpstreamNetworks,
  validateConnectorDefinition,
  validateConnectorPatch,
  widenedOperations,
} from '@writ/connectors';
import { CredentialRevoker, RowIntegrity } from '@writ/grants';
import { ConnectorEntity, PG_POOL, RowOf } from '@writ/database';
import { MasterKey } from '@writ/keys';
import { ConflictError, NotFoundError, ValidationFailedError } from '@writ/platform';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { adminChange } from '../auth/admin-change';
import { decodeCursor, encodeCursor, isKeyCursor, Page } from '../common/cursor';
import { DEFAULT_PAGE_SIZE, PageQueryDto } from '../common/page-query.dto';
import { tokensRevokedEvents } from '../common/revocation-events';
import { canonicalJson, IfMatch, requireMatch } from '../common/entity-tag';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import { ConnectorDto, toConnectorDto } from './dto/connector.dtos';

/** Every column but the sealed credential, which only the gateway opens. */
const COLUMNS = 'id, kind, name, base_url, operations, credential_type, credential_fingerprint, credential_set_at, created_at, updated_at';
/** A row as {@link COLUMNS} selects it (never the sealed credential). */
type Row = Omit<RowOf<ConnectorEntity>, 'credential_sealed'>;

/**
 * The body as plain JSON again: the validation pipe hands over a DTO instance, while the
 * connector validator wants the plain document the client sent (it checks every member).
 */
function asSubmitted(body: unknown): unknown {
  return body === undefined ? undefined : JSON.parse(JSON.stringify(body));
}

function valid<T>(outcome: ConnectorValidationResult<T>): T {
  if (outcome.ok) return outcome.value;
  throw new ValidationFailedError(outcome.errors, 'the connector definition is invalid');
}

function refuse(errors: ConnectorFieldError[]): void {
  if (errors.length > 0) throw new ValidationFailedError(errors, 'the connector definition is invalid');
}

/** An operation's `request_headers` as the gateway reads them (a set of names, any case, `_` as `-`), or null when it declares none. */
function requestHeaderSet(operation: ConnectorOperationDefinition): string | null {
  if (operation.request_headers === undefined) return null;
  return JSON.stringify([...new Set(operation.request_headers.map((name) => name.toLowerCase().replace(/_/g, '-')))].sort());
}

/**
 * The operations whose gateway rules a catalogue change alters (method, path, constraints or
 * request headers allowed changed, or removed; or paths of a more specific operation now theirs:
 * {@link widenedOperations}): credentials issued for them were checked against other rules. A header added to `request_headers` widens what a call may carry;
 * dropping the list does too (every header is forwarded again).
 */
function alteredOperations(before: ConnectorOperationDefinition[], after: ConnectorOperationDefinition[]): string[] {
  const next = new Map(after.map((operation) => [operation.name, operation]));
  // An operation left as it was but now reaching paths a removed or moved, more specific one
  // took (`/items/{id}` once `/items/export` is gone) was granted for fewer calls.
  const widened = new Set(widenedOperations(before, after));
  return before
    .filter((old) => {
      const now = next.get(old.name);
      return (
        !now ||
        now.method !== old.method ||
        now.path !== old.path ||
        canonicalJson(now.constraints ?? {}) !== canonicalJson(old.constraints ?? {}) ||
        requestHeaderSet(now) !== requestHeaderSet(old) ||
        widened.has(old.name)
      );
    })
    .map((operation) => operation.name);
}

/**
 * Where users' connected-account tokens go with this connector and credential: the gateway
 * sends access tokens to `base_url`, refreshes at `token_url` and revokes at `revocation_url`
 * (origins, as the tokens' seal is bound to the origin of `token_url`). `null` when the
 * credential does not use connected accounts.
 */
function accountDestinations(baseUrl: string, credential: UpstreamCredential | null): string | null {
  if (!credential || credential.type !== 'oauth2_authorization_code') return null;
  const origin = (url: string | undefined) => (url === undefined ? null : new URL(url).origin);
  return JSON.stringify([origin(baseUrl), origin(credential.token_url), origin(credential.revocation_url)]);
}

/** Reason recorded on each connection removed because its connector's destinations changed. */
const DESTINATION_CHANGED = 'connector destination changed';

/** The `400` of a destination change that keeps a credential bound to the old one. */
const CREDENTIAL_REQUIRED: ConnectorFieldError = {
  field: 'credential',
  message:
    'changing base_url requires the credential again in the same request (or "credential": null to remove it): the stored credential is bound to the old destination',
};

/**
 * Registers, changes and removes connectors. Upstream credentials are sealed with the master
 * key before they reach the database and are never read back here: responses and audit
 * events carry only their type and keyed fingerprint.
 */
@Injectable()
export class ConnectorsService {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    private readonly revoker: CredentialRevoker,
    private readonly master: MasterKey,
    private readonly accounts: ConnectedAccounts,
    private readonly integrity: RowIntegrity,
    @Inject(WRIT_CONFIG) config: WritConfig,
    private readonly idempotency: AdminIdempotency,
  ) {
    this.networks = new UpstreamNetworks(config.upstreamAllowedNetworks);
  }

  /** Where `base_url` and `token_url` may point (`WRIT_UPSTREAM_ALLOWED_NETWORKS`). */
  private readonly networks: UpstreamNetworks;

  /** Registers a connector (`409` for a taken id); once per `Idempotency-Key` (see {@link AdminIdempotency}). */
  create(principal: AdminPrincipal, body: unknown, request?: IdempotentRequest): Promise<ConnectorDto> {
    return this.idempotency.run(request, (claim) => this.register(principal, body, claim));
  }

  private async register(principal: AdminPrincipal, body: unknown, claim: IdempotencyClaim | undefined): Promise<ConnectorDto> {
    const definition = valid(validateConnectorDefinition(asSubmitted(body)));
    refuse(await destinationErrors(definition, this.networks));
    const sealed = definition.credential ? sealCredential(this.master, definition.id, definition.base_url, definition.credential) : undefined;
    const { result } = await this.audit.recordWith(
      idempotent(
        claim,
        adminChange(principal, async (client) => {
          const { rows } = await client.query<Row>(
            `INSERT INTO connectors (id, name, base_url, operations, credential_type, credential_sealed, credential_fingerprint, credential_set_at, kind, integrity_tag)
           VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $5::text IS NULL THEN NULL ELSE now() END, $8, $9)
           ON CONFLICT (id) DO NOTHING RETURNING ${COLUMNS}`,
            [
              definition.id,
              definition.name,
              definition.base_url,
              JSON.stringify(definition.operations),
              sealed?.type ?? null,
              sealed?.sealed ?? null,
              sealed?.fingerprint ?? null,
              definition.kind,
              this.integrity.tagConnector({
                id: definition.id,
                kind: definition.kind,
                baseUrl: definition.base_url,
                // As it is stored and read back (JSON: no undefined members).
                operations: JSON.parse(JSON.stringify(definition.operations)) as unknown,
                credentialType: sealed?.type ?? null,
              }),
            ],
          );
          if (!rows[0]) throw new ConflictError(`a connector with the id ${definition.id} already exists`);
          return toConnectorDto(rows[0]);
        }),
      ),
      (connector) => [
        {
          type: 'admin.connector.created',
          outcome: 'success',
          actor: adminActor(principal),
          connectorId: connector.id,
          data: {
            name: connector.name,
            kind: connector.kind,
            base_url: connector.base_url,
            operations: definition.operations.map((operation) => operation.name),
            credential: connector.credential ? { type: connector.credential.type, fingerprint: connector.credential.fingerprint } : null,
          },
        },
      ],
    );
    return result;
  }

  /** A page of connectors, by id. */
  async list(query: PageQueryDto): Promise<Page<ConnectorDto>> {
    const after = decodeCursor(query.cursor, isKeyCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM connectors WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2`, [
      after?.k ?? null,
      limit + 1,
    ]);
    const items = rows.slice(0, limit).map(toConnectorDto);
    return { items, next_cursor: rows.length > limit ? encodeCursor({ k: items[items.length - 1].id }) : null };
  }

  /** One connector, or `404`. */
  async get(id: string): Promise<ConnectorDto> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM connectors WHERE id = $1`, [id]);
    if (!rows[0]) throw new NotFoundError('connector');
    return toConnectorDto(rows[0]);
  }

  /**
   * Changes a connector; a credential given replaces the sealed one (rotation), `null`
   * removes it. The credential is bound to its destination: a new `base_url` needs the
   * credential again in the same request. Credentials issued for operations whose method,
   * path or constraints change (or that are removed) are revoked in the same transaction.
   * With `If-Match`, the change applies only to the version it names (`412` otherwise).
   */
  async update(principal: AdminPrincipal, id: string, body: unknown, ifMatch?: IfMatch): Promise<ConnectorDto> {
    // A connector's kind never changes, so it can be read before the transaction: it decides what an operation is.
    const kinds = await this.pool.query<{ kind: ConnectorKind }>('SELECT kind FROM connectors WHERE id = $1', [id]);
    if (!kinds.rows[0]) throw new NotFoundError('connector');
    const patch = valid(validateConnectorPatch(asSubmitted(body), kinds.rows[0].kind));
    refuse(await destinationErrors(patch, this.networks));
    const { result } = await this.audit.recordWith(
      adminChange(principal, async (client) => {
        // FOR UPDATE: an issuance in flight holds this row key-share-locked (see connectorCredentials),
        // so the revocation below sees its credential, or the issuance sees the changed operation.
        const current = await client.query<Row & { operations_text: string; integrity_tag: string | null; credential_sealed: Buffer | null }>(
          `SELECT ${COLUMNS}, operations::text AS operations_text, integrity_tag, credential_sealed FROM connectors WHERE id = $1 FOR UPDATE`,
          [id],
        );
        const before = current.rows[0];
        if (!before) throw new NotFoundError('connector');
        requireMatch(ifMatch, toConnectorDto(before), 'connector');
        const previous = before.credential_fingerprint;
        const changed: string[] = [];
        if (patch.name !== undefined && patch.name !== before.name) changed.push('name');
        if (patch.base_url !== undefined && patch.base_url !== before.base_url) changed.push('base_url');
        if (patch.operations !== undefined && canonicalJson(patch.operations) !== canonicalJson(before.operations)) changed.push('operations');
        if (changed.includes('base_url') && before.credential_type && patch.credential === undefined) refuse([CREDENTIAL_REQUIRED]);
        const baseUrl = patch.base_url ?? before.base_url;
        const sealed = patch.credential ? sealCredential(this.master, id, baseUrl, patch.credential) : undefined;
        const removed = patch.credential === null && before.credential_type !== null;
        const altered = patch.operations ? alteredOperations(before.operations as ConnectorOperationDefinition[], patch.operations) : [];
        if (changed.length === 0 && !sealed && !removed) {
          return { connector: toConnectorDto(before), changed, previous, sealed, removed, jtis: [] as string[], connections: undefined };
        }
        // Users' connected accounts were granted for the connector's destinations: a change of one
        // (a new base_url, token or revocation endpoint, another credential type, none) removes them,
        // revoked at the upstream with the credential they were granted under, as a deletion does.
        // Otherwise whoever makes the change, with an app credential of their own, would have the
        // gateway send users' access tokens, or a disconnect their refresh tokens, to the new host.
        let connections: Awaited<ReturnType<ConnectedAccounts['removeForConnector']>> | undefined;
        if (changed.includes('base_url') || patch.credential !== undefined) {
          const kept =
            before.credential_type === null || before.credential_sealed === null ? null : this.openedCredential(id, before.base_url, before.credential_sealed);
          const next = removed ? null : (patch.credential ?? (kept === 'unopened' ? null : kept));
          if (kept === 'unopened' || accountDestinations(before.base_url, kept) !== accountDestinations(baseUrl, next)) {
            connections = await this.accounts.removeForConnector(client, id, adminActor(principal), DESTINATION_CHANGED);
          }
        }
        const jtis = await this.revoker.revokeForOperations(client, id, altered, 'connector operation changed');
        const operations = patch.operations ?? before.operations;
        const credentialType = removed ? null : (sealed?.type ?? before.credential_type);
        // Tagged again only if the row read verifies: an admin change never launders a catalogue
        // changed outside Writ (the tag read is kept, and verifies again only once the row is
        // set back to what Writ wrote).
        const tag = this.integrity.verifyConnectorRow(before)
          ? this.integrity.tagConnector({ id, kind: before.kind, baseUrl, operations: JSON.parse(JSON.stringify(operations)) as unknown, credentialType })
          : before.integrity_tag;
        const { rows } = await client.query<Row>(
          `UPDATE connectors SET name = $2, base_url = $3, operations = $4, updated_at = now(), integrity_tag = $9,
                  credential_type = CASE WHEN $8 THEN NULL ELSE COALESCE($5, credential_type) END,
                  credential_sealed = CASE WHEN $8 THEN NULL ELSE COALESCE($6, credential_sealed) END,
                  credential_fingerprint = CASE WHEN $8 THEN NULL ELSE COALESCE($7, credential_fingerprint) END,
                  credential_set_at = CASE WHEN $8 THEN NULL WHEN $5::text IS NULL THEN credential_set_at ELSE now() END
            WHERE id = $1 RETURNING ${COLUMNS}`,
          [
            id,
            patch.name ?? before.name,
            baseUrl,
            JSON.stringify(operations),
            sealed?.type ?? null,
            sealed?.sealed ?? null,
            sealed?.fingerprint ?? null,
            removed,
            tag,
          ],
        );
        return { connector: toConnectorDto(rows[0]), changed, previous, sealed, removed, jtis, connections };
      }),
      ({ connector, changed, previous, sealed, removed, jtis, connections }) => {
        const actor = adminActor(principal);
        const events: AuditEventInput[] = [];
        if (changed.length > 0) {
          events.push({
            type: 'admin.connector.updated',
            outcome: 'success',
            actor,
            connectorId: id,
            data: {
              changed,
              ...(changed.includes('base_url') ? { base_url: connector.base_url } : {}),
              ...(changed.includes('operations') ? { operations: (patch.operations ?? []).map((operation) => operation.name) } : {}),
            },
          });
        }
        if (sealed) {
          events.push({
            type: 'admin.connector.credential_rotated',
            outcome: 'success',
            actor,
            connectorId: id,
            data: { type: sealed.type, fingerprint: sealed.fingerprint, previous_fingerprint: previous },
          });
        }
        if (removed) {
          events.push({ type: 'admin.connector.credential_removed', outcome: 'success', actor, connectorId: id, data: { previous_fingerprint: previous } });
        }
        events.push(...tokensRevokedEvents(principal, jtis, 'connector operation changed', { connectorId: id }));
        events.push(...(connections?.events ?? []));
        return events;
      },
    );
    await result.connections?.revokeUpstream();
    return result.connector;
  }

  /** The connector's stored credential, opened for its stored `base_url` (never sent anywhere from here). */
  private openedCredential(id: string, baseUrl: string, sealed: Buffer): UpstreamCredential | 'unopened' {
    try {
      return unsealCredential(this.master, id, baseUrl, sealed);
    } catch {
      return 'unopened';
    }
  }

  /**
   * Revokes every credential issued for the connector and removes every user's connected
   * account to it, then removes it; once that committed, revokes those users' grants at the
   * upstream (each result audited) before answering. With `If-Match`, only the version it names.
   */
  async remove(principal: AdminPrincipal, id: string, ifMatch?: IfMatch): Promise<void> {
    const actor = adminActor(principal);
    const { result } = await this.audit.recordWith(
      adminChange(principal, async (client) => {
        const current = await client.query<Row>(`SELECT ${COLUMNS} FROM connectors WHERE id = $1 FOR UPDATE`, [id]);
        if (!current.rows[0]) throw new NotFoundError('connector');
        requireMatch(ifMatch, toConnectorDto(current.rows[0]), 'connector');
        const jtis = await this.revoker.revokeForConnector(client, id, 'connector deleted');
        const connections = await this.accounts.removeForConnector(client, id, actor, 'connector deleted');
        await client.query('DELETE FROM connectors WHERE id = $1', [id]);
        return { jtis, connections };
      }),
      ({ jtis, connections }) => [
        {
          type: 'admin.connector.deleted',
          outcome: 'success',
          actor,
          connectorId: id,
          data: { tokens_revoked: jtis.length, connections_removed: connections.removed },
        },
        ...tokensRevokedEvents(principal, jtis, 'connector deleted', { connectorId: id }),
        ...connections.events,
      ],
    );
    await result.connections.revokeUpstream();
  }
}
