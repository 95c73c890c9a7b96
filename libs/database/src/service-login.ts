import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import { SERVICE_ROLE } from './migrations';

/** A least-privilege login role and its password. */
export interface ServiceLogin {
  user: string;
  password: string;
}

/** Same key as the migrations' lock: role changes never race a migration of another instance. */
const ROLE_LOCK = 7_311_042;

function quoteIdentifier(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain role name: ${name}`);
  return `"${name}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677; the format of
 * `pg_authid.rolpassword`). `PASSWORD '<verifier>'` sets the password without the statement
 * carrying it: the server's log (`log_statement`, an error's `STATEMENT:` line, which Writ logs
 * at `debug` for the embedded cluster) and `pg_stat_activity` never see it in clear.
 */
export function scramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/**
 * Makes `login` a login role that is a member of `writ_service` and nothing more: no
 * superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, owner of nothing. Its password is
 * (re)set to the given one, so the file that keeps it stays the truth. Run as the owner or a
 * superuser, after the migrations (which create `writ_service`).
 */
export async function ensureServiceLogin(pool: Pool, login: ServiceLogin): Promise<void> {
  const role = quoteIdentifier(login.user);
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [ROLE_LOCK]);
    const service = await client.query(`SELECT 1 FROM pg_roles WHERE rolname = $1`, [SERVICE_ROLE]);
    if (service.rowCount === 0) throw new Error(`the role ${SERVICE_ROLE} does not exist (migrations not run?)`);
    const found = await client.query(`SELECT 1 FROM pg_roles WHERE rolname = $1`, [login.user]);
    const attributes = `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD ${quoteLiteral(scramVerifier(login.password))}`;
    await client.query(`${found.rowCount === 0 ? 'CREATE' : 'ALTER'} ROLE ${role} ${attributes}`);
    await client.query(`GRANT ${SERVICE_ROLE} TO ${role}`);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [ROLE_LOCK]).catch(() => undefined);
    client.release();
  }
}
