import { MigrationInterface, QueryRunner } from 'typeorm';

/** The role whose members may run Writ but cannot change or remove audit rows. */
export const SERVICE_ROLE = 'writ_service';

/**
 * Sets up `writ_service`: every privilege Writ's services need, and on `audit_events` only
 * SELECT and INSERT (no UPDATE, DELETE or TRUNCATE), so that with an external PostgreSQL the
 * services can run as a login role that is a member of it, not as the tables' owner. Where
 * the migrating role may not create roles (some managed databases), this is skipped with a
 * notice: docs/operations.md gives the statements to run by hand.
 */
export class ServiceRole1764350000000 implements MigrationInterface {
  name = 'ServiceRole1764350000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      DO $$
      BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${SERVICE_ROLE}') THEN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RAISE NOTICE 'cannot create role ${SERVICE_ROLE}: see docs/operations.md';
            RETURN;
          END IF;
          CREATE ROLE ${SERVICE_ROLE} NOLOGIN;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO ${SERVICE_ROLE}', current_schema());
        GRANT SELECT, INSERT, UPDATE, DELETE ON agents, orchestrators, connectors, tasks, access_tokens,
          client_assertion_jtis, signing_keys, admin_tokens, policies TO ${SERVICE_ROLE};
        GRANT SELECT, UPDATE ON audit_chain_head TO ${SERVICE_ROLE};
        GRANT SELECT, INSERT ON audit_events TO ${SERVICE_ROLE};
        GRANT SELECT ON writ_migrations TO ${SERVICE_ROLE};
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM ${SERVICE_ROLE};
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${SERVICE_ROLE}') THEN
          REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ${SERVICE_ROLE};
        END IF;
      END $$`);
  }
}
