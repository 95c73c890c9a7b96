import { MigrationInterface, QueryRunner } from 'typeorm';

/** The SQLSTATE {@link BatchExpectations1764550000000}'s `writ_expect` raises: what a one-message audit batch assumed is not so. */
export const EXPECTATION_FAILED = 'WR001';

/**
 * `writ_expect(actual, expected, what)`: `actual` when it equals `expected`, otherwise an error
 * with SQLSTATE {@link EXPECTATION_FAILED}. A one-message audit batch (`AuditService`) sends its
 * events with the work they depend on, hashed on the chain head it expects and written for the
 * outcomes it expects; this function is how the statements of that message check both, under
 * the chain-head lock, and abort the whole message when either is not so. A function of its
 * own, with a code of its own, so that this failure is never taken for another one.
 */
export class BatchExpectations1764550000000 implements MigrationInterface {
  name = 'BatchExpectations1764550000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE FUNCTION writ_expect(actual bigint, expected bigint, what text) RETURNS bigint LANGUAGE plpgsql AS $$
      BEGIN
        IF actual IS DISTINCT FROM expected THEN
          RAISE EXCEPTION 'writ: % is %, not %', what, actual, expected USING ERRCODE = '${EXPECTATION_FAILED}';
        END IF;
        RETURN actual;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP FUNCTION writ_expect(bigint, bigint, text)');
  }
}
