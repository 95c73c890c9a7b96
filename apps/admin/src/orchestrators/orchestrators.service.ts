import { Inject, Injectable } from '@nestjs/common';
import { GrantStore } from '@writ/grants';
import type { Pool } from 'pg';
import { AuditEventInput, AuditService } from '@writ/audit';
import { OrchestratorEntity, PG_POOL, RowOf } from '@writ/database';
import { NotFoundError } from '@writ/platform';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { claimClientId, generateClientId, kidsOf, publicJwksOrRefuse } from '../common/client-identity';
import { decodeCursor, encodeCursor, isKeyCursor, Page } from '../common/cursor';
import type { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { DEFAULT_PAGE_SIZE } from '../common/page-query.dto';
import { tokensRevokedEvents } from '../common/revocation-events';
import { CreateOrchestratorDto, OrchestratorDto, toOrchestratorDto, UpdateOrchestratorDto } from './dto/orchestrator.dtos';

/** A row of the table, as {@link COLUMNS} selects it. */
type Row = RowOf<OrchestratorEntity>;

const COLUMNS = 'id, name, description, status, jwks, allowed_agents, created_at, updated_at';

/**
 * Registers, changes and removes orchestrators. A suspension or deletion revokes the
 * orchestrator's Tasks API tokens in the transaction of the change and its events; the tasks
 * it declared run on until they end or expire.
 */
@Injectable()
export class OrchestratorsService {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    private readonly grants: GrantStore,
  ) {}

  /** Registers an orchestrator (`409` when the id is taken by an agent or an orchestrator). */
  async create(principal: AdminPrincipal, body: CreateOrchestratorDto): Promise<OrchestratorDto> {
    const jwks = publicJwksOrRefuse(body.jwks);
    const id = body.id ?? generateClientId('orch');
    const { result } = await this.audit.recordWith(
      async (client) => {
        await claimClientId(client, id);
        const { rows } = await client.query<Row>(
          `INSERT INTO orchestrators (id, name, description, status, jwks, allowed_agents)
           VALUES ($1, $2, $3, 'active', $4, $5) RETURNING ${COLUMNS}`,
          [id, body.name, body.description ?? null, JSON.stringify(jwks), body.allowed_agents ?? []],
        );
        return toOrchestratorDto(rows[0]);
      },
      (orchestrator) => [
        {
          type: 'admin.orchestrator.created',
          outcome: 'success',
          actor: adminActor(principal),
          data: { id: orchestrator.id, name: orchestrator.name, allowed_agents: orchestrator.allowed_agents, kids: kidsOf(jwks) },
        },
      ],
    );
    return result;
  }

  /** A page of orchestrators, by id. */
  async list(query: ListClientsQueryDto): Promise<Page<OrchestratorDto>> {
    const after = decodeCursor(query.cursor, isKeyCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const { rows } = await this.pool.query<Row>(
      `SELECT ${COLUMNS} FROM orchestrators
        WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2)
        ORDER BY id LIMIT $3`,
      [query.status ?? null, after?.k ?? null, limit + 1],
    );
    const items = rows.slice(0, limit).map(toOrchestratorDto);
    return { items, next_cursor: rows.length > limit ? encodeCursor({ k: items[items.length - 1].id }) : null };
  }

  /** One orchestrator, or `404`. */
  async get(id: string): Promise<OrchestratorDto> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM orchestrators WHERE id = $1`, [id]);
    if (!rows[0]) throw new NotFoundError('orchestrator');
    return toOrchestratorDto(rows[0]);
  }

  /** Changes an orchestrator; suspending it revokes its Tasks API tokens. */
  async update(principal: AdminPrincipal, id: string, body: UpdateOrchestratorDto): Promise<OrchestratorDto> {
    const jwks = body.jwks !== undefined ? publicJwksOrRefuse(body.jwks) : undefined;
    const { result } = await this.audit.recordWith(
      async (client) => {
        const current = await client.query<Row>(`SELECT ${COLUMNS} FROM orchestrators WHERE id = $1 FOR UPDATE`, [id]);
        const before = current.rows[0];
        if (!before) throw new NotFoundError('orchestrator');
        const changed: string[] = [];
        if (body.name !== undefined && body.name !== before.name) changed.push('name');
        if (body.description !== undefined && (body.description ?? null) !== before.description) changed.push('description');
        if (jwks !== undefined && JSON.stringify(jwks) !== JSON.stringify(before.jwks)) changed.push('jwks');
        if (body.allowed_agents !== undefined && JSON.stringify(body.allowed_agents) !== JSON.stringify(before.allowed_agents)) {
          changed.push('allowed_agents');
        }
        const statusChange = body.status !== undefined && body.status !== before.status ? body.status : undefined;
        if (changed.length === 0 && !statusChange) return { orchestrator: toOrchestratorDto(before), changed, statusChange, jtis: [] as string[] };
        const { rows } = await client.query<Row>(
          `UPDATE orchestrators SET name = $2, description = $3, jwks = $4, status = $5, allowed_agents = $6, updated_at = now()
            WHERE id = $1 RETURNING ${COLUMNS}`,
          [
            id,
            body.name ?? before.name,
            body.description !== undefined ? body.description : before.description,
            JSON.stringify(jwks ?? before.jwks),
            statusChange ?? before.status,
            body.allowed_agents ?? before.allowed_agents,
          ],
        );
        const jtis = statusChange === 'suspended' ? await this.grants.revokeTasksTokensOf(client, id, 'orchestrator suspended') : [];
        return { orchestrator: toOrchestratorDto(rows[0]), changed, statusChange, jtis };
      },
      ({ orchestrator, changed, statusChange, jtis }) => {
        const actor = adminActor(principal);
        const events: AuditEventInput[] = [];
        if (changed.length > 0) {
          events.push({
            type: 'admin.orchestrator.updated',
            outcome: 'success',
            actor,
            data: {
              id,
              changed,
              ...(changed.includes('allowed_agents') ? { allowed_agents: orchestrator.allowed_agents } : {}),
              ...(changed.includes('jwks') ? { kids: (orchestrator.jwks as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid) } : {}),
            },
          });
        }
        if (statusChange === 'suspended') {
          events.push({ type: 'admin.orchestrator.suspended', outcome: 'success', actor, data: { id, tokens_revoked: jtis.length } });
          events.push(...tokensRevokedEvents(principal, jtis, 'orchestrator suspended', {}));
        } else if (statusChange === 'active') {
          events.push({ type: 'admin.orchestrator.reactivated', outcome: 'success', actor, data: { id } });
        }
        return events;
      },
    );
    return result.orchestrator;
  }

  /** Removes an orchestrator and revokes its Tasks API tokens. */
  async remove(principal: AdminPrincipal, id: string): Promise<void> {
    await this.audit.recordWith(
      async (client) => {
        const current = await client.query('SELECT id FROM orchestrators WHERE id = $1 FOR UPDATE', [id]);
        if (!current.rows[0]) throw new NotFoundError('orchestrator');
        const jtis = await this.grants.revokeTasksTokensOf(client, id, 'orchestrator deleted');
        await client.query('DELETE FROM orchestrators WHERE id = $1', [id]);
        return jtis;
      },
      (jtis) => [
        { type: 'admin.orchestrator.deleted', outcome: 'success', actor: adminActor(principal), data: { id, tokens_revoked: jtis.length } },
        ...tokensRevokedEvents(principal, jtis, 'orchestrator deleted', {}),
      ],
    );
  }
}
