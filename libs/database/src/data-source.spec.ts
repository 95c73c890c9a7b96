import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import type { DataSource } from 'typeorm';
import { createTestDatabase, TestDatabase, withDatabase } from '@writ/testing';
import { createDataSource, migrate, NewerSchemaError } from './data-source';
import { MIGRATIONS } from './migrations';

/** Names of the migrations this build knows, as the migrations table records them. */
const KNOWN = MIGRATIONS.map((migration) => new migration().name);
const NEWEST_KNOWN = KNOWN.reduce((a, b) => (Number(a.slice(-13)) > Number(b.slice(-13)) ? a : b));

/** As a newer release would have recorded them (TypeORM's row: timestamp from the name's last 13 digits). */
async function recordMigrations(url: string, names: string[]): Promise<void> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    for (const name of names) await client.query(`INSERT INTO writ_migrations ("timestamp", "name") VALUES ($1, $2)`, [name.slice(-13), name]);
  } finally {
    await client.end();
  }
}

async function appliedNames(url: string): Promise<string[]> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<{ name: string }>(`SELECT name FROM writ_migrations`)).rows.map((row) => row.name);
  } finally {
    await client.end();
  }
}

describe('migrate: a database migrated by a newer release', () => {
  let db: TestDatabase;
  let dataSource: DataSource;

  beforeEach(async () => {
    db = await createTestDatabase();
    dataSource = createDataSource(db.url, { poolSize: 1 });
    await dataSource.initialize();
  });
  afterEach(async () => {
    await dataSource.destroy();
    await db.drop();
  });

  it('runs nothing on a database at this build’s schema, and finds nothing unknown', async () => {
    expect(await migrate(dataSource)).toEqual({ applied: [], unknown: [] });
  });

  it('refuses a database holding migrations this build does not know, naming the newest first', async () => {
    await recordMigrations(db.url, ['FutureColumns1893456000000', 'FutureTable1924992000000']);
    const refused = await migrate(dataSource).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(NewerSchemaError);
    expect((refused as NewerSchemaError).unknown).toEqual(['FutureTable1924992000000', 'FutureColumns1893456000000']);
    expect((refused as Error).message).toContain('the newest FutureTable1924992000000');
  });

  it('runs nothing when it refuses: not even a known migration missing below the unknown one', async () => {
    // The newest known migration's row gone (its schema change stays): run, it would fail on the
    // column it adds again; refused first, it is not run at all.
    const client = new Client({ connectionString: db.url });
    await client.connect();
    await client.query(`DELETE FROM writ_migrations WHERE name = $1`, [NEWEST_KNOWN]).finally(() => client.end());
    await recordMigrations(db.url, ['FutureTable1924992000000']);
    await expect(migrate(dataSource)).rejects.toBeInstanceOf(NewerSchemaError);
    expect(await appliedNames(db.url)).not.toContain(NEWEST_KNOWN);
  });

  it('goes on with allowNewerSchema, and says which migrations it does not know', async () => {
    await recordMigrations(db.url, ['FutureTable1924992000000']);
    expect(await migrate(dataSource, { allowNewerSchema: true })).toEqual({ applied: [], unknown: ['FutureTable1924992000000'] });
    // Nothing of the newer release's rows is touched.
    expect(await appliedNames(db.url)).toContain('FutureTable1924992000000');
  });
});

describe('migrate: a new database', () => {
  it('creates the migrations table and runs every migration (no table is not a newer schema)', async () => {
    const adminUrl = process.env.WRIT_TEST_ADMIN_URL!;
    const name = `writ_empty_${randomBytes(6).toString('hex')}`;
    const admin = new Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const dataSource = createDataSource(withDatabase(adminUrl, name), { poolSize: 1 });
    try {
      await dataSource.initialize();
      const outcome = await migrate(dataSource);
      expect(outcome.unknown).toEqual([]);
      expect([...outcome.applied].sort()).toEqual([...KNOWN].sort());
    } finally {
      if (dataSource.isInitialized) await dataSource.destroy();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });
});
