import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

/** Name of the migrated template database that test databases are cloned from. */
export const TEMPLATE_DATABASE = 'writ_template';

/** Env variable through which the global setup hands the cluster's admin URL to workers. */
export const ADMIN_URL_ENV = 'WRIT_TEST_ADMIN_URL';

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** A fresh, migrated database of the test cluster, and a way to drop it. */
export interface TestDatabase {
  readonly url: string;
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
  return {
    url: withDatabase(adminUrl, name),
    name,
    drop: async () => {
      const client = new Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

export { withDatabase };
