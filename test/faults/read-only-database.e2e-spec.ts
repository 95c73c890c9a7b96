import { Client } from 'pg';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, type World } from '../support/grant-flow';
import { sendJson, tokenRequest } from '../support/oauth-client';
import { startTestServices, type TestServices } from '../support/test-services';

jest.setTimeout(120_000);

/**
 * The database answers but refuses every write (a standby after a failover, or
 * `default_transaction_read_only` set by an operator): PostgreSQL's `25006`. Nothing is issued
 * or changed, and each refusal is the unavailability it is (503 with Retry-After), never a 500.
 */
describe('faults: a database that refuses writes (read-only transactions)', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
  });
  afterAll(async () => {
    await services?.close();
  });

  /** Makes every new session of the database read-only and ends the current ones. */
  async function readOnly(on: boolean): Promise<void> {
    const admin = new Client({ connectionString: services.db.url });
    await admin.connect();
    try {
      // This session too starts read-only once the database is.
      await admin.query('SET default_transaction_read_only = off');
      await admin.query(`ALTER DATABASE ${services.db.name} SET default_transaction_read_only = ${on ? 'on' : 'off'}`);
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [services.db.name]);
    } finally {
      await admin.end();
    }
  }

  it('answers token exchanges and admin changes 503 with Retry-After, then serves again', async () => {
    const task = await createTask(services, world.orchestrator);
    await readOnly(true);
    try {
      for (let attempt = 0; attempt < 3; attempt += 1) {
        const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
        expect({ status: exchanged.status, error: exchanged.body.error }).toEqual({ status: 503, error: 'temporarily_unavailable' });
        expect(exchanged.headers.get('retry-after')).toMatch(/^[0-9]+$/);
      }
      const created = await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'read-only-probe', role: 'viewer' }, services.adminToken);
      expect(created.status).toBe(503);
      expect(created.headers.get('retry-after')).toMatch(/^[0-9]+$/);
    } finally {
      await readOnly(false);
    }
    const { rows } = await services.runtime.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(rows[0].n).toBe(0);
    const again = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(again.status).toBe(200);
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
  });
});
