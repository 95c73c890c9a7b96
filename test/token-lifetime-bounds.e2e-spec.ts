import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, payoutUpTo, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { postForm, sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/**
 * The contract: a credential's `exp` never passes its task's expiry. The lifetime is decided
 * when the request is, and the token signed later: whatever the exchange waits for in between
 * (a database under load, a lock) must not move the credential's end past the task's.
 */
describe('credential lifetime against the task deadline', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    // Payouts above 100.00 USD need a human (policy data, as test/approvals.e2e-spec.ts).
    await requireApprovalAbove(services, 10000);
  });
  afterAll(() => services.close());

  it('an exchange held up for seconds after its decision still ends its credential no later than the task', async () => {
    const task = await createTask(services, world.orchestrator, { ttl_seconds: 15 });
    const taskEnd = Date.parse(task.expires_at) / 1000;
    const pending = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(42000)));
    expect(pending.body.error).toBe('authorization_pending');
    const approvalId: string = pending.body.approval_id;
    const approved = await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/approve`, {}, services.adminToken);
    expect(approved.status).toBe(200);

    // The approved exchange spends its assertion's jti after the decision: a concurrent,
    // uncommitted insert of that jti holds it there for a few seconds (then rolls back).
    const jti = randomUUID();
    const blocker = await services.runtime.pool.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query(`INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, now() + interval '5 minutes')`, [
        world.agent.id,
        jti,
      ]);
      const answer = postForm(`${services.issuer}/oauth2/token`, {
        ...exchangeFields(task.task_token, payoutUpTo(42000), { approval_id: approvalId }),
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer, { claims: { jti } })),
      });
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      await blocker.query('ROLLBACK');
      const granted = await answer;
      expect(granted.status).toBe(200);
      const claims = decodeJwt(granted.body.access_token);
      expect(claims.exp).toBeLessThanOrEqual(taskEnd);
      expect(claims.exp! - claims.iat!).toBe(granted.body.expires_in);
      // The row the gateway and introspection read says the same.
      const { rows } = await services.runtime.pool.query<{ expires_at: Date }>('SELECT expires_at FROM access_tokens WHERE jti = $1', [claims.jti]);
      expect(rows[0].expires_at.getTime() / 1000).toBeLessThanOrEqual(taskEnd);
    } finally {
      blocker.release();
    }
  });
});
