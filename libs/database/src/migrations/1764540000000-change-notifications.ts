import { MigrationInterface, QueryRunner } from 'typeorm';
import { CONNECTOR_VERSION_TRIGGERS } from './1764536000000-connector-versions';

/** The channel a change of a connector row is notified on (payload: its id). */
export const CONNECTOR_CHANGED_CHANNEL = 'writ_connector_changed';
/** The channel a change of an agent or orchestrator row is notified on (payload: its id). */
export const CLIENT_CHANGED_CHANNEL = 'writ_client_changed';
/** The channel any change of the signing keys is notified on (no payload). */
export const SIGNING_KEYS_CHANGED_CHANNEL = 'writ_signing_keys_changed';
/** The channel any change of the stored policies (an activation) is notified on (no payload). */
export const POLICY_CHANGED_CHANNEL = 'writ_policy_changed';

const CLIENT_TABLES = ['agents', 'orchestrators'];

/**
 * What the services keep in memory is dropped on every instance when it changes:
 *
 * - `agents.version` and `orchestrators.version`, moved on by a trigger on every change of the
 *   row (admin API or SQL by hand), and a `writ_client_changed` notification (payload: the id)
 *   on every update or delete. Issuance compares, in the statement that records the credential,
 *   the version the request was authenticated against with the row's (see `credential-ledger`),
 *   so a copy the notification has not yet dropped issues nothing and the request is
 *   authenticated again;
 * - the connectors' version and notification triggers move onto the same two functions;
 * - `writ_signing_keys_changed` after any statement that changes `signing_keys` (rotation,
 *   retirement): every instance reloads its keys;
 * - `writ_policy_changed` after any statement that changes `policies` (activation,
 *   deactivation): every instance installs the active policy.
 *
 * A notification is sent when its transaction commits, never before.
 */
export class ChangeNotifications1764540000000 implements MigrationInterface {
  name = 'ChangeNotifications1764540000000';

  async up(q: QueryRunner): Promise<void> {
    // Two functions for every table that has a version or is notified: the channel is the
    // trigger's argument. The connectors' triggers move onto them.
    await q.query(`
      CREATE FUNCTION writ_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        NEW.version := OLD.version + 1;
        RETURN NEW;
      END $$`);
    await q.query(`
      CREATE FUNCTION writ_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        -- Row triggers name the row (its id); statement triggers name nothing.
        IF TG_LEVEL = 'ROW' THEN
          PERFORM pg_notify(TG_ARGV[0], OLD.id);
        ELSE
          PERFORM pg_notify(TG_ARGV[0], '');
        END IF;
        RETURN NULL;
      END $$`);
    await this.versioned(q, 'connectors', CONNECTOR_CHANGED_CHANNEL, true);
    await q.query('DROP FUNCTION writ_connector_version()');
    await q.query('DROP FUNCTION writ_connector_changed()');
    for (const table of CLIENT_TABLES) {
      await q.query(`ALTER TABLE ${table} ADD COLUMN version bigint NOT NULL DEFAULT 1`);
      await this.versioned(q, table, CLIENT_CHANGED_CHANNEL, false);
    }
    await q.query(
      `CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE ON signing_keys
         FOR EACH STATEMENT EXECUTE FUNCTION writ_row_changed('${SIGNING_KEYS_CHANGED_CHANNEL}')`,
    );
    await q.query(
      `CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
         FOR EACH STATEMENT EXECUTE FUNCTION writ_row_changed('${POLICY_CHANGED_CHANNEL}')`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TRIGGER policies_changed ON policies');
    await q.query('DROP TRIGGER signing_keys_changed ON signing_keys');
    for (const table of CLIENT_TABLES) {
      await q.query(`DROP TRIGGER ${table}_changed ON ${table}`);
      await q.query(`DROP TRIGGER ${table}_version ON ${table}`);
      await q.query(`ALTER TABLE ${table} DROP COLUMN version`);
    }
    // The connectors' own functions, as 1764536000000 made them.
    await q.query('DROP TRIGGER connectors_changed ON connectors');
    await q.query('DROP TRIGGER connectors_version ON connectors');
    for (const statement of CONNECTOR_VERSION_TRIGGERS) await q.query(statement);
    await q.query('DROP FUNCTION writ_row_changed()');
    await q.query('DROP FUNCTION writ_next_version()');
  }

  /** `version` moved on by every update of a row of `table`, and `channel` notified (payload: the id) on every update or delete. */
  private async versioned(q: QueryRunner, table: string, channel: string, replace: boolean): Promise<void> {
    if (replace) {
      await q.query(`DROP TRIGGER ${table}_version ON ${table}`);
      await q.query(`DROP TRIGGER ${table}_changed ON ${table}`);
    }
    await q.query(`CREATE TRIGGER ${table}_version BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION writ_next_version()`);
    await q.query(`CREATE TRIGGER ${table}_changed AFTER UPDATE OR DELETE ON ${table} FOR EACH ROW EXECUTE FUNCTION writ_row_changed('${channel}')`);
  }
}
