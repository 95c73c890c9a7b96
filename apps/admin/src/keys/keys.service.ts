import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { AuditService } from '@writ/audit';
import { PG_POOL, RowOf, SigningKeyEntity } from '@writ/database';
import { SigningKeyStore } from '@writ/keys';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import type { RotatedKeyDto, SigningKeyListDto } from './dto/signing-key.dto';

/** Lists and rotates Writ's signing keys. */
@Injectable()
export class KeysService {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly keys: SigningKeyStore,
    private readonly audit: AuditService,
  ) {}

  /** Every key, newest first: public facts only (the sealed private part is never selected). */
  async list(): Promise<SigningKeyListDto> {
    const { rows } = await this.pool.query<Pick<RowOf<SigningKeyEntity>, 'kid' | 'alg' | 'status' | 'created_at' | 'retired_at'>>(
      'SELECT kid, alg, status, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid',
    );
    return {
      items: rows.map((row) => ({
        kid: row.kid,
        alg: row.alg,
        status: row.status,
        created_at: row.created_at.toISOString(),
        retired_at: row.retired_at ? row.retired_at.toISOString() : null,
      })),
      next_cursor: null,
    };
  }

  /**
   * Makes a new key active; the previous one keeps verifying (status `retiring`) until the
   * tokens it signed have expired. The key store commits the rotation in its own locked
   * transaction; `admin.key.rotated` is recorded right after, before the answer.
   */
  async rotate(principal: AdminPrincipal): Promise<RotatedKeyDto> {
    const previous = this.keys.activeKid();
    const kid = await this.keys.rotate();
    await this.audit.record({ type: 'admin.key.rotated', outcome: 'success', actor: adminActor(principal), data: { kid, previous_kid: previous } });
    return { kid };
  }
}
