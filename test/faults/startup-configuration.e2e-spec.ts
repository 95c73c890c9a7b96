import { createServer, Server } from 'node:net';
import { buildOnce, startWrit } from './support/writ-process';

jest.setTimeout(240_000);

/** The one line a start that failed printed, from startWrit's rejection. */
async function startFailure(env: Record<string, string>): Promise<string> {
  try {
    const writ = await startWrit({ env, readyTimeoutMs: 180_000 });
    writ.child.kill('SIGKILL');
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('the start was expected to fail');
}

describe('faults: a start with invalid variables', () => {
  beforeAll(() => buildOnce());

  it('stops at once with one line naming each variable, never echoing a secret', async () => {
    const message = await startFailure({
      WRIT_AUTH_PORT: '0x10',
      WRIT_ISSUER: 'http://writ:hunter2-issuer@127.0.0.1:4000',
      WRIT_DATABASE_URL: 'postgres://writ:hunter2-database@db.invalid:99999/writ',
      WRIT_MASTER_KEY: 'hunter2-master-key',
    });
    expect(message).toContain('exited (code 1)');
    const line = message.split('\n').find((text) => text.startsWith('writ: writ cannot start: invalid configuration: '));
    expect(line).toBeDefined();
    for (const variable of ['WRIT_AUTH_PORT', 'WRIT_ISSUER', 'WRIT_DATABASE_URL', 'WRIT_MASTER_KEY']) expect(line).toContain(variable);
    expect(message).not.toContain('hunter2');
  });
});

describe('faults: a start that cannot listen says which variable to look at', () => {
  let taken: Server;
  let takenPort: number;

  beforeAll(async () => {
    buildOnce();
    taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    takenPort = (taken.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((resolve) => taken.close(() => resolve())));

  it('names the port variable when the port is in use, and exits 1', async () => {
    const message = await startFailure({ WRIT_GATEWAY_PORT: String(takenPort), WRIT_GATEWAY_URL: `http://127.0.0.1:${takenPort}` });
    expect(message).toContain('exited (code 1)');
    expect(message).toContain(`writ: writ cannot start: cannot listen on 127.0.0.1:${takenPort}: the port is in use (WRIT_GATEWAY_PORT)`);
  });

  it('names WRIT_HOST when its name does not resolve, or is no address of this host', async () => {
    expect(await startFailure({ WRIT_HOST: 'writ-listen.invalid' })).toMatch(
      /writ: writ cannot start: cannot listen on writ-listen\.invalid:\d+: the host name does not resolve \(WRIT_HOST\)/,
    );
    // TEST-NET-1 (RFC 5737): never an address of this host.
    expect(await startFailure({ WRIT_HOST: '192.0.2.1', WRIT_ALLOWED_HOSTS: '*' })).toMatch(
      /writ: writ cannot start: cannot listen on 192\.0\.2\.1:\d+: the address is not one of this host \(WRIT_HOST\)/,
    );
  });
});
