import { MigrationInterface, QueryRunner } from 'typeorm';

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
    await q.query(`
      CREATE FUNCTION writ_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        NEW.version := OLD.version + 1;
        RETURN NEW;
      END $$`);
    await q.query(`
      CREATE FUNCTION writ_client_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('${CLIENT_CHANGED_CHANNEL}', OLD.id);
        RETURN NULL;
      END $$`);
    for (const table of CLIENT_TABLES) {
      await q.query(`ALTER TABLE ${table} ADD COLUMN version bigint NOT NULL DEFAULT 1`);
      await q.query(`CREATE TRIGGER ${table}_version BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION writ_next_version()`);
      await q.query(`CREATE TRIGGER ${table}_changed AFTER UPDATE OR DELETE ON ${table} FOR EACH ROW EXECUTE FUNCTION writ_client_changed()`);
    }
    // pg_notify with its channel as the trigger's argument: one function for both tables.
    await q.query(`
      CREATE FUNCTION writ_table_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify(TG_ARGV[0], '');
        RETURN NULL;
      END $$`);
    await q.query(
      `CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE ON signing_keys
         FOR EACH STATEMENT EXECUTE FUNCTION writ_table_changed('${SIGNING_KEYS_CHANGED_CHANNEL}')`,
    );
    await q.query(
      `CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
         FOR EACH STATEMENT EXECUTE FUNCTION writ_table_changed('${POLICY_CHANGED_CHANNEL}')`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TRIGGER policies_changed ON policies');
    await q.query('DROP TRIGGER signing_keys_changed ON signing_keys');
    await q.query('DROP FUNCTION writ_table_changed()');
    for (const table of CLIENT_TABLES) {
      await q.query(`DROP TRIGGER ${table}_changed ON ${table}`);
      await q.query(`DROP TRIGGER ${table}_version ON ${table}`);
      await q.query(`ALTER TABLE ${table} DROP COLUMN version`);
    }
    await q.query('DROP FUNCTION writ_client_changed()');
    await q.query('DROP FUNCTION writ_next_version()');
  }
}
