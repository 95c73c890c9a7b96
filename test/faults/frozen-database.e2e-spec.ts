import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClientKey, jwksOf, startScratchPostgres, ScratchPostgres } from '@writ/testing';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { startTestServices, TestServices } from '../support/test-services';
import { childrenOf } from './support/writ-process';

jest.setTimeout(180_000);

/**
 * PostgreSQL frozen (SIGSTOP of the postmaster and every backend), as a hung host or a full
 * disk looks from outside: connections open but nothing answers. Every request must end in
 * `503` with `Retry-After`, within the configured deadlines, and the service must resume by
 * itself once PostgreSQL answers again.
 */
describe('faults: a frozen PostgreSQL', () => {
  let cluster: ScratchPostgres;
  let services: TestServices;
  let frozen: number[] = [];

  const freeze = () => {
    const postmaster = Number(readFileSync(join(cluster.clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    frozen = [postmaster, ...childrenOf(postmaster)];
    for (const pid of frozen) process.kill(pid, 'SIGSTOP');
  };
  const thaw = () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    frozen = [];
  };

  beforeAll(async () => {
    cluster = await startScratchPostgres();
    services = await startTestServices({
      databaseUrl: cluster.url,
      admin: createAdminApp,
      env: { WRIT_DB_CHECKOUT_TIMEOUT_MS: '1000', WRIT_DB_STATEMENT_TIMEOUT_MS: '1500', WRIT_DB_LOCK_TIMEOUT_MS: '1000' },
    });
  });

  afterAll(async () => {
    thaw();
    await services?.close();
    await cluster?.destroy();
  });

  it('answers only 503 with Retry-After while frozen, names the failing check, and recovers by itself', async () => {
    const jwks = jwksOf(await createClientKey());
    const createAgent = (id: string) =>
      fetch(`${services.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id, name: id, jwks }),
        // A hang is a failure of this test, not a jest timeout.
        signal: AbortSignal.timeout(60_000),
      });
    expect((await createAgent('before')).status).toBe(201);

    freeze();
    const calls = [
      ...Array.from({ length: 30 }, (_, n) => createAgent(`frozen-${n}`)),
      ...Array.from({ length: 10 }, () =>
        fetch(`${services.adminUrl}/v1/agents`, { headers: { authorization: `Bearer ${services.adminToken}` }, signal: AbortSignal.timeout(60_000) }),
      ),
      // An OAuth endpoint: the RFC 6749 shape.
      ...Array.from({ length: 10 }, () =>
        fetch(`${services.issuer}/oauth2/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: 'grant_type=client_credentials&client_id=nobody&scope=tasks',
          signal: AbortSignal.timeout(60_000),
        }),
      ),
    ];
    const answers = await Promise.all(
      calls.map(async (call) => {
        const res = await call;
        return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as { error?: string } };
      }),
    );
    for (const answer of answers) {
      expect(answer).toEqual({
        status: 503,
        retryAfter: expect.stringMatching(/^[0-9]+$/),
        body: expect.objectContaining({ error: 'temporarily_unavailable' }),
      });
    }
    const ready = await fetch(`${services.adminUrl}/health/ready`, { signal: AbortSignal.timeout(60_000) });
    expect(ready.status).toBe(503);
    expect(ready.headers.get('retry-after')).toBeTruthy();
    expect(await ready.json()).toEqual(expect.objectContaining({ failing: ['database'] }));
    expect((await fetch(`${services.adminUrl}/health/live`)).status).toBe(200);

    thaw();
    let status = 0;
    for (let attempt = 0; attempt < 60 && status !== 201; attempt += 1) {
      status = (await createAgent(`after-${attempt}`)).status;
      if (status !== 201) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(status).toBe(201);
    expect((await fetch(`${services.adminUrl}/health/ready`)).status).toBe(200);
  });

  // Without deadlines of its own, the checkpoint connection waited for ever: every later
  // checkpoint queued behind it, and the audit log went unsigned. Jest's deadline fails it then.
  it('fails a checkpoint on a frozen server within its deadline instead of hanging, then signs again', async () => {
    const checkpointer = services.runtime.checkpointer!;
    // The checkpoint connection is open (and idle) when the server freezes.
    await checkpointer.checkpoint();
    freeze();
    try {
      await expect(checkpointer.checkpoint()).rejects.toThrow();
    } finally {
      thaw();
    }
    let signed = false;
    for (let attempt = 0; attempt < 60 && !signed; attempt += 1) {
      signed = await checkpointer.checkpoint().then(
        () => true,
        () => false,
      );
      if (!signed) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(signed).toBe(true);
  }, 60_000);

  // A dropped or frozen connection reports no error by itself: without a check of its own, the
  // listener looked listening for ever while no notification could arrive.
  it('stops holding what it caches once the listening connection stops answering, and listens again after', async () => {
    const channel = 'writ_client_changed';
    expect(services.runtime.changes.listening(channel)).toBe(true);
    freeze();
    try {
      let listening = true;
      for (let attempt = 0; attempt < 100 && listening; attempt += 1) {
        listening = services.runtime.changes.listening(channel);
        if (listening) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(listening).toBe(false);
    } finally {
      thaw();
    }
    let again = false;
    for (let attempt = 0; attempt < 150 && !again; attempt += 1) {
      again = services.runtime.changes.listening(channel);
      if (!again) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(again).toBe(true);
  }, 60_000);
});
