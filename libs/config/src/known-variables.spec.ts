import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KNOWN_VARIABLES, SECRET_VARIABLES, withdrawSecretVariables } from './known-variables';
import { loadConfig } from './writ-config';

describe('KNOWN_VARIABLES', () => {
  it('is exactly the WRIT_ variables libs/config reads, so none is reported unknown by mistake', () => {
    const source = readFileSync(join(__dirname, 'writ-config.ts'), 'utf8');
    const read = new Set([...source.matchAll(/(?:env\.|env\[|')(WRIT_[A-Z_]+)\b/g)].map((m) => m[1]));
    expect([...KNOWN_VARIABLES].sort()).toEqual([...read].sort());
  });
});

describe('withdrawSecretVariables', () => {
  it('takes every secret out of the environment once read, and leaves the rest', () => {
    for (const name of SECRET_VARIABLES) expect(KNOWN_VARIABLES).toContain(name);
    const env: Record<string, string | undefined> = {
      WRIT_MASTER_KEY: Buffer.alloc(32, 1).toString('base64'),
      WRIT_ADMIN_TOKEN: 'writ_admin_secret_0123456789abcdefghijklmnop',
      WRIT_DATABASE_URL: 'postgres://writ:hunter2@db/writ',
      WRIT_LOG_LEVEL: 'warn',
      PATH: '/usr/bin',
    };
    const config = loadConfig(env);
    expect(withdrawSecretVariables(env)).toEqual({
      WRIT_MASTER_KEY: Buffer.alloc(32, 1).toString('base64'),
      WRIT_ADMIN_TOKEN: 'writ_admin_secret_0123456789abcdefghijklmnop',
      WRIT_DATABASE_URL: 'postgres://writ:hunter2@db/writ',
    });
    expect(env).toEqual({ WRIT_LOG_LEVEL: 'warn', PATH: '/usr/bin' });
    // What was read stays in the configuration.
    expect(config.adminToken).toBe('writ_admin_secret_0123456789abcdefghijklmnop');
  });
});
