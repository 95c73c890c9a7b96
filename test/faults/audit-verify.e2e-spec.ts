import { Client } from 'pg';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { sendJson } from '../support/oauth-client';
import { startTestServices, TestServices } from '../support/test-services';

jest.setTimeout(120_000);

/**
 * Verification without starvation: `GET /v1/audit/verify` resumes from the last signed
 * checkpoint this instance verified (its cost is what was appended since), and a full walk is
 * an admin's explicit, rate-limited action.
 */
describe('faults: audit verification is incremental, a full walk is rate-limited', () => {
  let services: TestServices;
  let superuser: Client;
  let viewer: string;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    superuser = new Client({ connectionString: services.db.url });
    await superuser.connect();
    viewer = (await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'viewer', role: 'viewer' }, services.adminToken)).body.token;
  });
  afterAll(async () => {
    await superuser?.end();
    await services?.close();
  });

  const append = (n: number) =>
    services.runtime.audit.record(
      Array.from({ length: n }, (_, i) => ({ type: 'test.load', outcome: 'info' as const, actor: { type: 'system' as const }, data: { i } })),
    );
  const verify = (token: string, full = false) => sendJson('GET', `${services.adminUrl}/v1/audit/verify${full ? '?full=true' : ''}`, undefined, token);

  it('resumes from the verified checkpoint, still catches a change to it, and walks everything only on an admin’s request', async () => {
    await append(500);
    await services.runtime.checkpointer!.trigger();
    await services.runtime.checkpointer!.trigger();
    const checkpoint = Number((await superuser.query('SELECT max(seq) AS seq FROM audit_checkpoints')).rows[0].seq);
    const first = await verify(viewer);
    expect(first.body).toMatchObject({ valid: true });
    expect(first.body).not.toHaveProperty('resumed_from_seq');

    await append(20);
    const head = Number((await superuser.query('SELECT seq FROM audit_chain_head')).rows[0].seq);
    const second = await verify(viewer);
    expect(second.body).toMatchObject({ valid: true, events: head, resumed_from_seq: checkpoint });

    // The checkpointed event rewritten (hash and all): the resumed walk refuses to trust it.
    await superuser.query('BEGIN');
    await superuser.query('SET LOCAL session_replication_role = replica');
    await superuser.query(`UPDATE audit_events SET hash = repeat('0', 64) WHERE seq = $1`, [checkpoint]);
    await superuser.query('COMMIT');
    expect((await verify(viewer)).body).toMatchObject({ valid: false, first_invalid_seq: checkpoint });

    // A full walk: admins only, once a minute per instance.
    expect((await verify(viewer, true)).status).toBe(403);
    const full = await verify(services.adminToken, true);
    expect(full.status).toBe(200);
    expect(full.body).toMatchObject({ valid: false });
    const again = await verify(services.adminToken, true);
    expect(again.status).toBe(429);
    expect(Number(again.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await sendJson('GET', `${services.adminUrl}/v1/audit/verify?full=yes`, undefined, services.adminToken)).status).toBe(400);
  });
});
