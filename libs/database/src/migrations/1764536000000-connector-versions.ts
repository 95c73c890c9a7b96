import { MigrationInterface, QueryRunner } from 'typeorm';

/** The functions and triggers this migration creates (1764540000000 replaces and, going down, restores them). */
export const CONNECTOR_VERSION_TRIGGERS = [
  `CREATE FUNCTION writ_connector_version() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     NEW.version := OLD.version + 1;
     RETURN NEW;
   END $$`,
  `CREATE TRIGGER connectors_version BEFORE UPDATE ON connectors FOR EACH ROW EXECUTE FUNCTION writ_connector_version()`,
  `CREATE FUNCTION writ_connector_changed() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('writ_connector_changed', OLD.id);
     RETURN NULL;
   END $$`,
  `CREATE TRIGGER connectors_changed AFTER UPDATE OR DELETE ON connectors FOR EACH ROW EXECUTE FUNCTION writ_connector_changed()`,
];

/**
 * `connectors.version`, moved on by a trigger on every change of the row (admin API, the
 * gateway's credential re-binding, or SQL by hand), and a `writ_connector_changed`
 * notification (payload: the connector id) on every update or delete. The gateway keeps
 * connectors in memory: the notification drops its copy on every instance, and the version
 * is compared, in the same statement that spends a call's use, with the one the call was
 * checked against, so that a call checked against a copy the notification has not yet
 * dropped is checked again instead of forwarded (docs/performance.md).
 */
export class ConnectorVersions1764536000000 implements MigrationInterface {
  name = 'ConnectorVersions1764536000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE connectors ADD COLUMN version bigint NOT NULL DEFAULT 1`);
    for (const statement of CONNECTOR_VERSION_TRIGGERS) await q.query(statement);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TRIGGER connectors_changed ON connectors');
    await q.query('DROP FUNCTION writ_connector_changed()');
    await q.query('DROP TRIGGER connectors_version ON connectors');
    await q.query('DROP FUNCTION writ_connector_version()');
    await q.query('ALTER TABLE connectors DROP COLUMN version');
  }
}
