import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

/** Name of the migrated template database that test databases are cloned from. */
export const TEMPLATE_DATABASE = 'writ_template';

/** Env variable through which the global setup hands the cluster's admin URL to workers. */
export const ADMIN_URL_ENV = 'WRIT_TEST_ADMIN_URL';

/** Env variable through which the global setup hands the service login's password to workers. */
export const SERVICE_LOGIN_ENV = 'WRIT_TEST_SERVICE_PASSWORD';

/** The least-privilege login (member of `writ_service`) the test services connect as. */
export const TEST_SERVICE_USER = 'writ_test_service';

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** A fresh, migrated database of the test cluster, and a way to drop it. */
export interface TestDatabase {
  /** As the cluster's superuser: for setting up, and for attacks. */
  readonly url: string;
  /** As the least-privilege service login (member of `writ_service`), when the global setup made one. */
  readonly serviceUrl?: string;
  readonly name: string;
  drop(): Promise<void>;
}

/**
 * Clones the migrated template into a new database, so each suite runs on real PostgreSQL
 * with a schema of its own and nothing shared.
 */
export async function createTestDatabase(adminUrl = process.env[ADMIN_URL_ENV]): Promise<TestDatabase> {
  if (!adminUrl) throw new Error(`${ADMIN_URL_ENV} is not set: run the tests through jest (global setup)`);
  const name = `writ_test_${randomBytes(6).toString('hex')}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE_DATABASE}`);
  } finally {
    await admin.end();
  }
  const password = process.env[SERVICE_LOGIN_ENV];
  let serviceUrl: string | undefined;
  if (password) {
    const parsed = new URL(withDatabase(adminUrl, name));
    parsed.username = TEST_SERVICE_USER;
    parsed.password = password;
    serviceUrl = parsed.toString();
  }
  return {
    url: withDatabase(adminUrl, name),
    serviceUrl,
    name,
    drop: async () => {
      const client = new Client({ connectionString: adminUrl });
      await client.connect();
      try {
        // pg-pool's end() resolves once each client has been asked to end, before its backend
        // is gone; forcing the drop then would terminate those backends, and the FATAL they
        // send reaches an idle client's pool with no error listener (an unhandled error in
        // the suite). Wait (briefly) for the suite's connections to leave first.
        const deadline = Date.now() + 5_000;
        while (Date.now() < deadline) {
          const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`, [name]);
          if (rows[0].n === 0) break;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

export { withDatabase };
