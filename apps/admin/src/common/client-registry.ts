import type { PoolClient } from 'pg';
import { FindOptionsOrder, FindOptionsWhere, MoreThan, Repository } from 'typeorm';
import { rowOf, RowOf } from '@writ/database';
import type { RowIntegrity } from '@writ/grants';
import { NotFoundError } from '@writ/platform';
import type { PublicJwks } from '@writ/oauth';
import { claimClientId, generateClientId } from './client-identity';
import type { ClientRow, CreateClientDto, UpdateClientDto } from './client-identity.dto';
import { IfMatch, requireMatch } from './entity-tag';
import { decodeCursor, encodeCursor, isKeyCursor, Page } from './cursor';
import type { ListClientsQueryDto } from './list-clients-query.dto';
import { DEFAULT_PAGE_SIZE } from './page-query.dto';

/** Which registered clients a {@link ClientRegistry} keeps, and how they are shown. */
export interface ClientTable<R extends ClientRow, D extends { id: string }> {
  table: 'agents' | 'orchestrators';
  /** The resource named in a `404`. */
  noun: 'agent' | 'orchestrator';
  /** The prefix of generated ids. */
  idPrefix: 'agent' | 'orch';
  /** The columns beyond the shared ones (fixed names, never input). */
  extraColumns: ReadonlyArray<Exclude<keyof R & string, keyof ClientRow>>;
  toDto(row: R): D;
}

/** What an update changes, found under the row lock. */
export interface ClientChanges {
  /** The members whose value changes, in a stable order (`name`, `description`, `jwks`, then the extra columns). */
  changed: string[];
  /** The new status, when it changes. */
  statusChange?: ClientRow['status'];
}

/**
 * The client registry agents and orchestrators share: the id claim, the list, the read, the
 * row lock and the change of the shared members. What differs (revocations, audit events)
 * stays in each service; every write here runs on the caller's audited transaction.
 */
export class ClientRegistry<E extends { id: string; status: ClientRow['status'] }, R extends ClientRow & RowOf<E>, D extends { id: string }> {
  private readonly columns: string;

  /**
   * Reads go through the entity's `repository`; writes run on the caller's audited transaction,
   * each row written with its integrity tag (`integrity`: the registration's keys, status and,
   * for orchestrators, allowed agents, under the master key).
   */
  constructor(
    private readonly repository: Repository<E>,
    private readonly kind: ClientTable<R, D>,
    private readonly integrity: RowIntegrity,
  ) {
    this.columns = ['id', 'name', 'description', 'status', 'jwks', ...kind.extraColumns, 'created_at', 'updated_at'].join(', ');
  }

  /** The integrity tag of the registration as it will be written. */
  private tag(id: string, status: string, jwks: unknown, extras: unknown[]): string {
    const allowedAgents = this.kind.table === 'orchestrators' ? (extras[this.kind.extraColumns.indexOf('allowed_agents' as never)] as string[]) : undefined;
    return this.integrity.tagClient(this.kind.table, { id, status, jwks, ...(allowedAgents ? { allowedAgents } : {}) });
  }

  /** Claims the id across agents and orchestrators (`409` when taken) and inserts the client, active. */
  async insert(client: PoolClient, body: CreateClientDto, jwks: PublicJwks, extra: Partial<Record<keyof R, unknown>> = {}): Promise<D> {
    const id = body.id ?? generateClientId(this.kind.idPrefix);
    await claimClientId(client, id);
    const extras = this.kind.extraColumns.map((column) => extra[column]);
    const placeholders = extras.map((_, index) => `, $${index + 6}`).join('');
    const { rows } = await client.query<R>(
      `INSERT INTO ${this.kind.table} (id, name, description, status, jwks, integrity_tag${this.kind.extraColumns.map((c) => `, ${c}`).join('')})
       VALUES ($1, $2, $3, 'active', $4, $5${placeholders}) RETURNING ${this.columns}`,
      [id, body.name, body.description ?? null, JSON.stringify(jwks), this.tag(id, 'active', jwks, extras), ...extras],
    );
    return this.kind.toDto(rows[0]);
  }

  /** A page of clients, by id, optionally of one status (through the repository). */
  async list(query: ListClientsQueryDto): Promise<Page<D>> {
    const after = decodeCursor(query.cursor, isKeyCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const where = {
      ...(query.status !== undefined ? { status: query.status } : {}),
      ...(after !== undefined ? { id: MoreThan(after.k) } : {}),
    } as FindOptionsWhere<E>;
    const entities = await this.repository.find({ where, order: { id: 'ASC' } as FindOptionsOrder<E>, take: limit + 1 });
    const page = entities.slice(0, limit);
    return {
      items: page.map((entity) => this.kind.toDto(rowOf(entity) as R)),
      next_cursor: entities.length > limit ? encodeCursor({ k: page[page.length - 1].id }) : null,
    };
  }

  /** One client, or `404` (through the repository). */
  async get(id: string): Promise<D> {
    const entity = await this.repository.findOneBy({ id } as FindOptionsWhere<E>);
    if (!entity) throw new NotFoundError(this.kind.noun);
    return this.kind.toDto(rowOf(entity) as R);
  }

  /**
   * The client's row, locked `FOR UPDATE` in the caller's transaction, or `404`; with `If-Match`,
   * `412` unless the locked row is the version it names.
   */
  async lock(client: PoolClient, id: string, ifMatch?: IfMatch): Promise<R & { integrity_tag: string | null }> {
    const { rows } = await client.query<R & { integrity_tag: string | null }>(
      `SELECT ${this.columns}, integrity_tag FROM ${this.kind.table} WHERE id = $1 FOR UPDATE`,
      [id],
    );
    if (!rows[0]) throw new NotFoundError(this.kind.noun);
    requireMatch(ifMatch, this.kind.toDto(rows[0]), this.kind.noun);
    return rows[0];
  }

  /** What `body` (with its checked `jwks` and extra columns) changes of the locked row. */
  changes(before: R, body: UpdateClientDto, jwks: PublicJwks | undefined, extra: Partial<Record<keyof R, unknown>> = {}): ClientChanges {
    const changed: string[] = [];
    if (body.name !== undefined && body.name !== before.name) changed.push('name');
    if (body.description !== undefined && (body.description ?? null) !== before.description) changed.push('description');
    if (jwks !== undefined && JSON.stringify(jwks) !== JSON.stringify(before.jwks)) changed.push('jwks');
    for (const column of this.kind.extraColumns) {
      if (extra[column] !== undefined && JSON.stringify(extra[column]) !== JSON.stringify(before[column])) changed.push(column);
    }
    const statusChange = body.status !== undefined && body.status !== before.status ? body.status : undefined;
    return { changed, ...(statusChange ? { statusChange } : {}) };
  }

  /**
   * Writes the members given over the locked row, tagged again, and returns the new row. A row
   * whose tag does not verify (changed outside Writ) is never tagged with members kept from it:
   * unless the update sets every tagged member (`jwks`, `status` and an orchestrator's
   * `allowed_agents`), which repairs it, the row is written untagged and stays refused (a
   * suspension or a rename still applies; nothing it holds is vouched for).
   */
  async update(
    client: PoolClient,
    before: R & { integrity_tag: string | null },
    body: UpdateClientDto,
    jwks: PublicJwks | undefined,
    extra: Partial<Record<keyof R, unknown>> = {},
  ): Promise<R> {
    const extras = this.kind.extraColumns.map((column) => extra[column] ?? before[column]);
    const repairs = jwks !== undefined && body.status !== undefined && this.kind.extraColumns.every((column) => extra[column] !== undefined);
    const trusted = repairs || this.verified(before);
    const status = body.status ?? before.status;
    const written = jwks ?? before.jwks;
    const assignments = this.kind.extraColumns.map((column, index) => `, ${column} = $${index + 7}`).join('');
    const { rows } = await client.query<R>(
      `UPDATE ${this.kind.table} SET name = $2, description = $3, jwks = $4, status = $5, integrity_tag = $6${assignments}, updated_at = now()
        WHERE id = $1 RETURNING ${this.columns}`,
      [
        before.id,
        body.name ?? before.name,
        body.description !== undefined ? body.description : before.description,
        JSON.stringify(written),
        status,
        trusted ? this.tag(before.id, status, written, extras) : null,
        ...extras,
      ],
    );
    return rows[0];
  }

  /** Whether the locked row carries a valid integrity tag (logged when not). */
  private verified(row: R & { integrity_tag: string | null }): boolean {
    const allowedAgents = this.kind.table === 'orchestrators' ? (row as unknown as { allowed_agents: string[] }).allowed_agents : undefined;
    return this.integrity.verifyClient(
      this.kind.table,
      { id: row.id, status: row.status, jwks: row.jwks, ...(allowedAgents ? { allowedAgents } : {}) },
      row.integrity_tag,
    );
  }

  /** Deletes the (locked) client. */
  async delete(client: PoolClient, id: string): Promise<void> {
    await client.query(`DELETE FROM ${this.kind.table} WHERE id = $1`, [id]);
  }
}
