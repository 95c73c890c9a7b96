import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { checkDpopProof, PgJtiStore } from '@writ/credentials';
import { PG_POOL } from '@writ/database';

/** DPoP proofs sent to the token endpoint (RFC 9449 §5): checked against `POST <issuer>/oauth2/token`, used once. */
@Injectable()
export class DpopProofs {
  private readonly jtis: PgJtiStore;

  constructor(
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(PG_POOL) pool: Pool,
  ) {
    this.jtis = new PgJtiStore(pool);
  }

  /** The proof's key thumbprint, or `invalid_dpop_proof` (400). */
  async check(header: string | string[]): Promise<{ jkt: string }> {
    const verified = await checkDpopProof(this.jtis, header, { method: 'POST', url: `${this.config.issuer}/oauth2/token` });
    return { jkt: verified.jkt };
  }
}
