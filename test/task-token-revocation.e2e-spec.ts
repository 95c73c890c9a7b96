import { clientAuthFields, tagConnectorRow } from '@writ/testing';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, TestClient, tokenRequest } from './support/oauth-client';
import { seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

const SECRET = 'sk_live_task_token_0b7e';
const READ = [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }];

/**
 * RFC 7009 for task tokens: revoking a task token ends its task (`revoked`) and revokes every
 * credential of the task before the answer, when the agent or the task's orchestrator asks;
 * anyone else gets the RFC's 200 and changes nothing.
 */
describe('RFC 7009 revocation of task tokens', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let strangerOrchestrator: TestClient;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    strangerOrchestrator = await seedOrchestrator(services.runtime.pool, 'orch-stranger', ['*']);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  const revoke = async (token: string, client: TestClient) =>
    postForm(`${services.issuer}/oauth2/revoke`, { token, ...(await clientAuthFields(client.id, client.key, services.issuer)) });
  const exchange = (taskToken: string, details: unknown = PAYOUT_REQUEST) => tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, details));
  const balance = (token: string) => http(`${services.gatewayUrl}/connectors/payments/v1/balance`, { headers: { authorization: `Bearer ${token}` } });
  const taskRow = async (id: string) => (await services.runtime.pool.query('SELECT status, status_reason FROM tasks WHERE id = $1', [id])).rows[0];
  const liveCredentials = async (id: string) =>
    Number((await services.runtime.pool.query('SELECT count(*) FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL', [id])).rows[0].count);

  beforeAll(async () => {
    // A read operation on the balance, for a credential the test can spend many times.
    const { rows } = await services.runtime.pool.query(`SELECT operations FROM connectors WHERE id = 'payments'`);
    const operations = [...rows[0].operations, { name: 'balance.get', method: 'GET', path: '/v1/balance', risk: 'read', constraints: {} }];
    await services.runtime.pool.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(operations)]);
    await tagConnectorRow(services.runtime.pool, services.runtime.rowIntegrity, 'payments');
  });
  const BALANCE = [{ type: 'connector', connector: 'payments', actions: ['balance.get'] }];
  const balanceTask = () => createTask(services, world.orchestrator, { allowed: [...READ, ...BALANCE] });

  it('ends the task when its agent revokes its own task token: credentials and the task token stop working', async () => {
    const task = await balanceTask();
    const issued = await exchange(task.task_token, BALANCE);
    expect(issued.status).toBe(200);
    expect((await balance(issued.body.access_token)).status).toBe(200);

    const revoked = await revoke(task.task_token, world.agent);
    expect(revoked.status).toBe(200);
    expect(revoked.headers.get('cache-control')).toBe('no-store');
    expect(await taskRow(task.task_id)).toEqual({ status: 'revoked', status_reason: 'task token revoked (RFC 7009) by agent agent-1' });
    expect(await liveCredentials(task.task_id)).toBe(0);
    const refused = await balance(issued.body.access_token);
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_token');
    const again = await exchange(task.task_token, BALANCE);
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');

    await services.runtime.audit.drain();
    const { rows } = await services.runtime.pool.query(
      `SELECT type, actor_type, actor_id FROM audit_events WHERE task_id = $1 AND type IN ('task.revoked', 'token.revoked') ORDER BY seq`,
      [task.task_id],
    );
    expect(rows).toEqual([
      { type: 'task.revoked', actor_type: 'agent', actor_id: 'agent-1' },
      { type: 'token.revoked', actor_type: 'agent', actor_id: 'agent-1' },
    ]);
    // Revoking again is a 200 that changes nothing.
    expect((await revoke(task.task_token, world.agent)).status).toBe(200);
    await services.runtime.audit.drain();
    const events = await services.runtime.pool.query(`SELECT count(*) FROM audit_events WHERE task_id = $1 AND type = 'task.revoked'`, [task.task_id]);
    expect(Number(events.rows[0].count)).toBe(1);
  });

  it('ends the task when its orchestrator revokes the task token', async () => {
    const task = await balanceTask();
    const issued = await exchange(task.task_token, BALANCE);
    expect((await revoke(task.task_token, world.orchestrator)).status).toBe(200);
    expect((await taskRow(task.task_id)).status).toBe('revoked');
    expect((await balance(issued.body.access_token)).status).toBe(401);
  });

  it('answers 200 and changes nothing when another agent or another orchestrator revokes the task token', async () => {
    const task = await balanceTask();
    const issued = await exchange(task.task_token, BALANCE);
    for (const stranger of [world.otherAgent, strangerOrchestrator]) {
      const response = await revoke(task.task_token, stranger);
      expect(response.status).toBe(200);
      expect(response.text).toBe('');
    }
    expect((await taskRow(task.task_id)).status).toBe('active');
    expect((await balance(issued.body.access_token)).status).toBe(200);
    expect((await exchange(task.task_token, BALANCE)).status).toBe(200);
  });

  it('ignores a forged task token (the signature is checked)', async () => {
    const task = await balanceTask();
    const [header, payload] = task.task_token.split('.');
    expect((await revoke(`${header}.${payload}.${'A'.repeat(86)}`, world.agent)).status).toBe(200);
    expect((await taskRow(task.task_id)).status).toBe('active');
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
