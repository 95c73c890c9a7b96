import { mkdtemp } from 'node:fs/promises';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { randomBytes } from 'node:crypto';
import { createDataSource, createPool, ensureServiceLogin, migrate, startEmbeddedPostgres } from '../../database/src'; // global setup runs outside jest's module mapper
import { ADMIN_URL_ENV, SERVICE_LOGIN_ENV, TEST_SERVICE_USER, TEMPLATE_DATABASE, withDatabase } from './test-database';

/**
 * Starts one throwaway embedded PostgreSQL for the whole run (or uses WRIT_TEST_ADMIN_URL if
 * given), migrates the template database that every suite clones, and sets up the
 * least-privilege login the services run as.
 */
export default async function globalSetup(): Promise<void> {
  let adminUrl = process.env[ADMIN_URL_ENV];
  if (!adminUrl) {
    const dataDir = await mkdtemp(join(tmpdir(), 'writ-test-'));
    await chmod(dataDir, 0o755);
    const database = await startEmbeddedPostgres({
      dataDir,
      // Throwaway data: durability is not what the suite tests.
      onLog: process.env.WRIT_TEST_PG_LOG ? (line) => console.error(line) : undefined,
      settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '300' },
    });
    (globalThis as { __writDatabase?: unknown }).__writDatabase = database;
    // Removed by the global teardown: a cluster per run would otherwise pile up in the temp dir.
    (globalThis as { __writDataDir?: string }).__writDataDir = dataDir;
    adminUrl = database.adminUrl;
    process.env[ADMIN_URL_ENV] = adminUrl;
  }
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DATABASE}`);
    await admin.query(`CREATE DATABASE ${TEMPLATE_DATABASE}`);
  } finally {
    await admin.end();
  }
  const dataSource = createDataSource(withDatabase(adminUrl, TEMPLATE_DATABASE), { poolSize: 1 });
  await dataSource.initialize();
  try {
    await migrate(dataSource);
    // The login the test services connect as: a member of writ_service only, so that every
    // suite proves the grants are enough (roles are cluster-wide; clones inherit the grants).
    const password = randomBytes(18).toString('base64url');
    const owner = createPool(withDatabase(adminUrl, TEMPLATE_DATABASE), { poolSize: 1 });
    await ensureServiceLogin(owner, { user: TEST_SERVICE_USER, password }).finally(() => owner.end());
    process.env[SERVICE_LOGIN_ENV] = password;
  } finally {
    await dataSource.destroy();
  }
}
