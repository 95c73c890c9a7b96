import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `approvals.dpop_jkt`: the thumbprint of the DPoP key the agent asked with (null: asked without
 * one). An approval buys its credential only for that key (or, when null, only without a key):
 * the operator approved a credential bound to the agent's key, not one that whoever holds the
 * agent's client key and task token may bind to a key of their own, or take as a bearer token.
 * Rows asked before this column read null: they are used without a key, as before (the pending
 * ones are at most an hour old). A column added with no default: no rewrite, a moment's lock.
 */
export class ApprovalDpopKey1764690000000 implements MigrationInterface {
  name = 'ApprovalDpopKey1764690000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE approvals ADD COLUMN IF NOT EXISTS dpop_jkt text');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE approvals DROP COLUMN IF EXISTS dpop_jkt');
  }
}
