import { randomBytes } from 'node:crypto';
import { Client, Pool, type PoolClient } from 'pg';
import { ensureServiceLogin } from './service-login';

describe('ensureServiceLogin', () => {
  const adminUrl = process.env.WRIT_TEST_ADMIN_URL!;

  it('sets the password without any statement carrying it in clear (server logs, pg_stat_activity)', async () => {
    const login = { user: `writ_login_test_${randomBytes(4).toString('hex')}`, password: randomBytes(18).toString('base64url') };
    const pool = new Pool({ connectionString: adminUrl, max: 1 });
    const statements: string[] = [];
    const connect = pool.connect.bind(pool) as () => Promise<PoolClient>;
    (pool as unknown as { connect: () => Promise<PoolClient> }).connect = async () => {
      const client = await connect();
      const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
      (client as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args: unknown[]) => {
        statements.push(typeof args[0] === 'string' ? args[0] : String((args[0] as { text?: unknown }).text));
        return query(...args);
      };
      return client;
    };
    try {
      await ensureServiceLogin(pool, login);
      expect(statements.some((text) => text.includes(`ROLE "${login.user}"`))).toBe(true);
      for (const text of statements) expect(text).not.toContain(login.password);
      // The login works with the password, and only with it.
      const url = new URL(adminUrl);
      url.username = login.user;
      url.password = login.password;
      const client = new Client({ connectionString: url.toString() });
      await client.connect();
      const { rows } = await client.query<{ user: string }>('SELECT current_user AS user');
      expect(rows[0].user).toBe(login.user);
      await client.end();
      url.password = `${login.password}x`;
      await expect(new Client({ connectionString: url.toString() }).connect()).rejects.toThrow(/password authentication failed/);
    } finally {
      delete (pool as unknown as { connect?: unknown }).connect;
      await pool.query(`DROP ROLE IF EXISTS "${login.user}"`).catch(() => undefined);
      await pool.end();
    }
  });
});
