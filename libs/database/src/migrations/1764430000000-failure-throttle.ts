import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `throttle_failures`: failed authentications counted per key (a source address or a claimed
 * client id, per service scope) and fixed time window, shared by every instance. Only
 * failures write here; a successful request never touches it. Rows of ended windows are
 * deleted when their audit summary is written.
 */
export class FailureThrottle1764430000000 implements MigrationInterface {
  name = 'FailureThrottle1764430000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE throttle_failures (
        key text NOT NULL,
        window_start timestamptz NOT NULL,
        window_seconds integer NOT NULL,
        count integer NOT NULL,
        suppressed integer NOT NULL DEFAULT 0,
        PRIMARY KEY (key, window_start)
      )`);
    await q.query('CREATE INDEX throttle_failures_window_start ON throttle_failures (window_start)');
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE, DELETE ON throttle_failures TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE throttle_failures');
  }
}
