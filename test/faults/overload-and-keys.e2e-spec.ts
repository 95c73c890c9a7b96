import { decodeProtectedHeader } from 'jose';
import { createClientKey, jwksOf } from '@writ/testing';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { tasksToken } from '../support/grant-flow';
import { sendJson } from '../support/oauth-client';
import { seedOrchestrator } from '../support/seed';
import { startTestServices, TestServices } from '../support/test-services';

jest.setTimeout(120_000);

describe('faults: overload is shed, admitted requests finish', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp, env: { WRIT_MAX_IN_FLIGHT: '3' } });
  });
  afterAll(async () => {
    await services?.close();
  });

  it('refuses past the in-flight limit with 503 and Retry-After before any work, and counts it', async () => {
    const jwks = jwksOf(await createClientKey());
    const answers = await Promise.all(
      Array.from({ length: 60 }, async (_, n) => {
        const res = await fetch(`${services.adminUrl}/v1/agents`, {
          method: 'POST',
          headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ id: `burst-${n}`, name: `burst-${n}`, jwks }),
        });
        return { n, status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as { error?: string } };
      }),
    );
    const shed = answers.filter((answer) => answer.status === 503);
    const admitted = answers.filter((answer) => answer.status !== 503);
    expect(shed.length).toBeGreaterThan(0);
    expect(admitted.length).toBeGreaterThan(0);
    for (const answer of shed)
      expect(answer).toEqual(expect.objectContaining({ retryAfter: '1', body: expect.objectContaining({ error: 'temporarily_unavailable' }) }));
    // Every admitted one finished, and a shed one did nothing (no agent, no audit event).
    for (const answer of admitted) expect(answer.status).toBe(201);
    const { rows } = await services.runtime.pool.query<{ id: string }>(`SELECT id FROM agents WHERE id LIKE 'burst-%'`);
    expect(new Set(rows.map((row) => row.id))).toEqual(new Set(admitted.map((answer) => `burst-${answer.n}`)));
    const events = await services.runtime.pool.query(`SELECT 1 FROM audit_events WHERE type = 'admin.agent.created' AND agent_id LIKE 'burst-%'`);
    expect(events.rowCount).toBe(admitted.length);

    // Probes and scrapes are never shed; the metrics count the refusals.
    const metrics = await fetch(`${services.adminUrl}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toMatch(/writ_shed_requests_total\{service="admin",reason="overload"\} [1-9]/);
    expect(text).toContain('writ_db_pool_connections{state="waiting"}');
    expect(text).toMatch(/writ_audit_batch_events_count [1-9]/);
    // The checkpoints: the tail no signature covers yet, and no failed attempt.
    expect(text).toMatch(/writ_audit_unsigned_events [0-9]+/);
    expect(text).toContain('writ_audit_checkpoint_failures_total 0');
  });

  it('keeps a well-formed X-Request-Id and replaces any other', async () => {
    const kept = await fetch(`${services.adminUrl}/health/live`, { headers: { 'x-request-id': 'lb-7f3a.42:x' } });
    expect(kept.headers.get('x-request-id')).toBe('lb-7f3a.42:x');
    const replaced = await fetch(`${services.adminUrl}/health/live`, { headers: { 'x-request-id': 'bad id <script>'.padEnd(200, 'x') } });
    expect(replaced.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('records the caller’s request id in the audit events of its request', async () => {
    const jwks = jwksOf(await createClientKey());
    const create = (id: string, requestId?: string) =>
      fetch(`${services.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/json', ...(requestId ? { 'x-request-id': requestId } : {}) },
        body: JSON.stringify({ id, name: id, jwks }),
      });
    // Two at once, so that both join one group commit: each event keeps its own caller's id.
    const [one, two, none] = await Promise.all([create('rid-1', 'ticket-42.a'), create('rid-2', 'ticket-42.b'), create('rid-3')]);
    expect([one.status, two.status, none.status]).toEqual([201, 201, 201]);
    const { rows } = await services.runtime.pool.query<{ agent_id: string; request_id: string | null }>(
      `SELECT agent_id, data->>'request_id' AS request_id FROM audit_events WHERE type = 'admin.agent.created' AND agent_id LIKE 'rid-%' ORDER BY agent_id`,
    );
    expect(rows).toEqual([
      { agent_id: 'rid-1', request_id: 'ticket-42.a' },
      { agent_id: 'rid-2', request_id: 'ticket-42.b' },
      { agent_id: 'rid-3', request_id: null },
    ]);
  });
});

describe('faults: a key rotation reaches every instance', () => {
  let first: TestServices;
  let second: TestServices;

  beforeAll(async () => {
    first = await startTestServices({ admin: createAdminApp, env: { WRIT_KEY_REFRESH_SECONDS: '1' } });
    second = await startTestServices({ db: first.db, env: { WRIT_KEY_REFRESH_SECONDS: '1' } });
  });
  afterAll(async () => {
    await second?.close();
    await first?.close();
    await first?.db.drop().catch(() => undefined);
  });

  it('signs with the new key on the other instance within seconds, and publishes both', async () => {
    const orchestrator = await seedOrchestrator(first.runtime.pool, 'orch-rotation');
    const before = decodeProtectedHeader(await tasksToken(second, orchestrator)).kid;
    const rotated = await sendJson('POST', `${first.adminUrl}/v1/keys/rotate`, {}, first.adminToken);
    expect(rotated.status).toBe(201);
    const kid = rotated.body.kid as string;
    expect(kid).not.toBe(before);
    let signedWith: string | undefined;
    for (let attempt = 0; attempt < 40 && signedWith !== kid; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      signedWith = decodeProtectedHeader(await tasksToken(second, orchestrator)).kid;
    }
    expect(signedWith).toBe(kid);
    const jwks = (await (await fetch(`${second.issuer}/oauth2/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(jwks.keys.map((key) => key.kid)).toEqual(expect.arrayContaining([before, kid]));
  });

  it('published the new key before it signed, and retires a key only a token lifetime after it stopped signing', async () => {
    const keys = async () => (await first.runtime.pool.query<{ kid: string; status: string }>(`SELECT kid, status FROM signing_keys ORDER BY created_at`)).rows;
    const next = (await keys()).find((key) => key.status === 'next')!.kid;
    const jwks = (await (await fetch(`${second.issuer}/oauth2/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(jwks.keys.map((key) => key.kid)).toContain(next);
    const rotated = await sendJson('POST', `${first.adminUrl}/v1/keys/rotate`, {}, first.adminToken);
    expect(rotated.body.kid).toBe(next);
    // The key that just stopped signing was created long ago (as `next`): that does not retire it.
    const superuser = new (await import('pg')).Client({ connectionString: first.db.url });
    await superuser.connect();
    try {
      await superuser.query(`UPDATE signing_keys SET created_at = now() - interval '30 days' WHERE status <> 'next'`);
      expect(await first.runtime.signingKeys.retireOlderThan(86_400 + 300)).toBe(0);
      // A day and more after it stopped signing, it goes.
      await superuser.query(`UPDATE signing_keys SET retiring_since = now() - interval '2 days' WHERE status = 'retiring'`);
      expect(await first.runtime.signingKeys.retireOlderThan(86_400 + 300)).toBeGreaterThan(0);
      expect((await keys()).filter((key) => key.status === 'retiring')).toEqual([]);
    } finally {
      await superuser.end();
    }
  });
});
