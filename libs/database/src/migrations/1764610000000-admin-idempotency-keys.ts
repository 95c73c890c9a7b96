import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `admin_idempotency_keys`: the `Idempotency-Key` of each admin API create, per admin token (the
 * primary key: a key names one request of one token, never another token's). Taken in the
 * create's own transaction, before anything is created, so the key is recorded with the resource
 * or not at all, and a concurrent twin waits on the key's index entry, then replays. `endpoint`
 * and `request_digest` (an HMAC under a subkey of the master key over the token, key, endpoint
 * and RFC 8785 body: a body may carry an upstream credential) tell a retry from another request
 * (`422`); `answer` is the first answer without the secrets it showed once (an admin token, a
 * connect link's URL). Rows stop counting at `expires_at` (24 hours); each keyed create removes
 * up to 100 expired rows (`admin_idempotency_keys_expiry`). A deleted token's rows go with it
 * (`ON DELETE CASCADE`).
 */
export class AdminIdempotencyKeys1764610000000 implements MigrationInterface {
  name = 'AdminIdempotencyKeys1764610000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE admin_idempotency_keys (
        admin_token_id uuid NOT NULL REFERENCES admin_tokens (id) ON DELETE CASCADE,
        idempotency_key text NOT NULL,
        endpoint text NOT NULL,
        request_digest text NOT NULL,
        answer jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (admin_token_id, idempotency_key)
      )`);
    await q.query('CREATE INDEX admin_idempotency_keys_expiry ON admin_idempotency_keys (expires_at)');
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE, DELETE ON admin_idempotency_keys TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE admin_idempotency_keys');
  }
}
