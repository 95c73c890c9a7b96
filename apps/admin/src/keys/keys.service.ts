import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { AuditService } from '@writ/audit';
import { SigningKeyEntity } from '@writ/database';
import { SigningKeyStore } from '@writ/keys';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { adminChange } from '../auth/admin-change';
import { ValidationFailedError } from '@writ/platform';
import { decodeCursor, encodeCursor, isKeyCursor } from '../common/cursor';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import { DEFAULT_PAGE_SIZE, type PageQueryDto } from '../common/page-query.dto';
import type { RotatedKeyDto, SigningKeyListDto } from './dto/signing-key.dto';

/** Lists and rotates Writ's signing keys. */
@Injectable()
export class KeysService {
  constructor(
    @InjectRepository(SigningKeyEntity) private readonly repository: Repository<SigningKeyEntity>,
    private readonly keys: SigningKeyStore,
    private readonly audit: AuditService,
    private readonly idempotency: AdminIdempotency,
  ) {}

  /**
   * The keys, newest first: public facts only (the sealed private part is never selected). A
   * page starts after the key its cursor names; there are a few keys per rotation period, so
   * they are read whole and paged here.
   */
  async list(query: PageQueryDto): Promise<SigningKeyListDto> {
    const after = decodeCursor(query.cursor, isKeyCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const keys = await this.repository.find({
      select: { kid: true, alg: true, status: true, createdAt: true, retiredAt: true },
      order: { createdAt: 'DESC', kid: 'ASC' },
    });
    let start = 0;
    if (after) {
      start = keys.findIndex((key) => key.kid === after.k) + 1;
      // Keys are never deleted: a kid that is not there was not made by this list.
      if (start === 0) throw new ValidationFailedError([{ field: 'cursor', message: 'is not a cursor of this list' }], 'the query is invalid');
    }
    const page = keys.slice(start, start + limit);
    return {
      items: page.map((key) => ({
        kid: key.kid,
        alg: key.alg,
        status: key.status,
        created_at: key.createdAt.toISOString(),
        retired_at: key.retiredAt ? key.retiredAt.toISOString() : null,
      })),
      next_cursor: start + limit < keys.length ? encodeCursor({ k: page[page.length - 1].kid }) : null,
    };
  }

  /**
   * Makes a new key active; the previous one keeps verifying (status `retiring`) until the
   * tokens it signed have expired. The rotation and `admin.key.rotated` commit in one
   * transaction, under the key lock; `previous_kid` is the key that transaction retired (read
   * from the database, not this instance's copy of the active key, which another instance's
   * rotation may have made stale): concurrent rotations each name the key they retired.
   *
   * With an `Idempotency-Key` (see {@link AdminIdempotency}), a retry of the same request within
   * 24 hours rotates nothing and answers the first rotation's `kid`: a rotation retried after a
   * lost answer would otherwise make active the `next` key published a moment before, which
   * verifiers caching the JWKS have not fetched yet. The key is taken in the rotation's
   * transaction, before the key lock: twins sent at once on any instances make one rotation.
   */
  rotate(principal: AdminPrincipal, request?: IdempotentRequest): Promise<RotatedKeyDto> {
    return this.idempotency.run(request, (claim) => this.rotateOnce(principal, claim));
  }

  private async rotateOnce(principal: AdminPrincipal, claim: IdempotencyClaim | undefined): Promise<RotatedKeyDto> {
    const { result } = await this.audit.recordWith(
      idempotent(
        claim,
        adminChange(principal, (tx) => this.keys.rotateIn(tx)),
        ({ kid }): RotatedKeyDto => ({ kid }),
      ),
      ({ kid, previousKid }) => [{ type: 'admin.key.rotated', outcome: 'success', actor: adminActor(principal), data: { kid, previous_kid: previousKid } }],
    );
    await this.keys.reload();
    return { kid: result.kid };
  }
}
