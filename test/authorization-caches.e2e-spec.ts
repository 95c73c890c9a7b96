import type { INestApplication } from '@nestjs/common';
import type { ListenedCache } from '@writ/database';
import { clientAuthFields, createClientKey, jwksOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { ClientRegistry } from '../apps/authorization-server/src/client-auth/client-registry.service';
import type { RegisteredClient } from '../apps/authorization-server/src/client-auth/registered-client';
import { CatalogueConnector, ExchangeContextRepository } from '../apps/authorization-server/src/exchange/exchange-context.repository';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, World } from './support/grant-flow';
import { postForm, sendJson, TestClient, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS, seedAgent, seedConnector, seedOrchestrator } from './support/seed';
import { eventually } from './support/eventually';
import { startTestServices, TestServices } from './support/test-services';

/**
 * The authorization server keeps client registrations, signing keys and the policy in memory.
 * Two instances over one database: a registration changed through the admin API of the first
 * is what the very next request to the second is authenticated against, whether or not the
 * second has been told yet (its copy is dropped by a notification, and the statement that
 * records a credential checks the registration version the request was authenticated
 * against); a policy activated on the first decides the very next request to the second.
 */
describe('authorization server memory across instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;

  beforeAll(async () => {
    first = await startTestServices({ admin: createAdminApp });
    // Keys are re-read once an hour here: only the notification can show the second a rotation.
    second = await startTestServices({ db: first.db, env: { WRIT_KEY_REFRESH_SECONDS: '3600' } });
    const agent = await seedAgent(first.runtime.pool, 'agent-1');
    const otherAgent = await seedAgent(first.runtime.pool, 'agent-2');
    const orchestrator = await seedOrchestrator(first.runtime.pool, 'orch-1', ['agent-1', 'agent-2']);
    await seedConnector(first.runtime.pool, 'payments');
    world = { agent, otherAgent, orchestrator };
  });
  afterAll(async () => {
    await second.close();
    await first.close();
  });

  const secondApp = (): INestApplication => second.apps[0];
  const secondRegistry = () => secondApp().get(ClientRegistry);
  /** The registrations the second instance holds (private: the test plays a late notification). */
  const secondHeld = () => (secondRegistry() as unknown as { cache: ListenedCache<RegisteredClient> }).cache;
  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${first.adminUrl}${path}`, body, first.adminToken);

  /**
   * Changes a registration through the first instance's admin API, waits for the second to drop
   * its copy, then gives the old copy back to it, as if the notification had not arrived yet.
   */
  const changeBehindTheSecond = async (id: string, change: Record<string, unknown>, path: string) => {
    const stale = secondHeld().get(id);
    expect(stale).toBeDefined();
    expect((await admin('PATCH', `${path}/${id}`, change)).status).toBe(200);
    expect(
      await eventually(
        () => secondHeld().get(id),
        (held) => held === undefined,
      ),
    ).toBeUndefined();
    secondHeld().remember(id, stale!, secondHeld().mark());
    expect(secondHeld().get(id)).toBe(stale);
    return stale!;
  };

  /** The audit log's head, to read what a request recorded after it. */
  const head = async () => {
    await first.runtime.audit.drain();
    await second.runtime.audit.drain();
    const { rows } = await first.runtime.pool.query<{ seq: string }>(`SELECT coalesce(max(seq), 0) AS seq FROM audit_events`);
    return rows[0].seq;
  };
  /** The token endpoint's events recorded after `since`. */
  const eventsSince = async (since: string) => {
    await head();
    const { rows } = await first.runtime.pool.query<{ type: string; outcome: string; reason: string | null; actor_id: string | null }>(
      `SELECT type, outcome, data->>'reason' AS reason, actor_id FROM audit_events
        WHERE seq > $1 AND type IN ('token.refused', 'token.issued', 'grant.decision', 'client.authentication_failed') ORDER BY seq`,
      [since],
    );
    return rows;
  };

  it('listens for client changes on every instance', () => {
    expect(secondRegistry().listening).toBe(true);
    expect(first.apps[0].get(ClientRegistry).listening).toBe(true);
  });

  it('refuses on the other instance, at once, an assertion signed with a key removed from an agent through the admin API', async () => {
    const agent: TestClient = { id: 'agent-rotated', key: await createClientKey() };
    expect((await admin('POST', '/v1/agents', { id: agent.id, name: agent.id, jwks: jwksOf(agent.key) })).status).toBe(201);
    expect((await admin('PATCH', '/v1/orchestrators/orch-1', { allowed_agents: ['agent-1', 'agent-2', agent.id] })).status).toBe(200);
    // Warm: the second instance authenticates the agent and holds its registration.
    const warm = await createTask(second, world.orchestrator, { agent_id: agent.id });
    expect((await tokenRequest(second.issuer, agent, exchangeFields(warm.task_token, PAYOUT_REQUEST))).status).toBe(200);
    expect(secondHeld().get(agent.id)).toBeDefined();

    const task = await createTask(second, world.orchestrator, { agent_id: agent.id });
    const replacement = await createClientKey();
    await changeBehindTheSecond(agent.id, { jwks: jwksOf(replacement) }, '/v1/agents');
    const since = await head();

    const fields = exchangeFields(task.task_token, PAYOUT_REQUEST);
    const assertion = await clientAuthFields(agent.id, agent.key, second.issuer);
    const refused = await postForm(`${second.issuer}/oauth2/token`, { ...fields, ...assertion });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');

    // Nothing issued; one refusal, of an unauthenticated request, as a fresh instance answers it.
    const { rows: tokens } = await first.runtime.pool.query(`SELECT 1 FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(tokens).toHaveLength(0);
    expect(await eventsSince(since)).toEqual([{ type: 'token.refused', outcome: 'failure', reason: 'assertion_key', actor_id: null }]);
    const { rows: spent } = await first.runtime.pool.query(`SELECT 1 FROM client_assertion_jtis WHERE client_id = $1 AND jti = $2`, [
      agent.id,
      JSON.parse(Buffer.from(assertion.client_assertion.split('.')[1], 'base64url').toString()).jti,
    ]);
    expect(spent).toHaveLength(0);
    const { rows: counters } = await first.runtime.pool.query(`SELECT refusals FROM tasks WHERE id = $1`, [task.task_id]);
    expect(counters[0].refusals).toBe(0);
    // The stale copy is gone; the new key works on the second instance.
    expect(secondHeld().get(agent.id)?.jwks).toEqual(jwksOf(replacement));
    const renewed = await tokenRequest(second.issuer, { id: agent.id, key: replacement }, fields);
    expect(renewed.status).toBe(200);
  });

  it('records no refusal for a request from a removed key that the policy would refuse, on an instance that had not been told yet', async () => {
    const agent: TestClient = { id: 'agent-refused', key: await createClientKey() };
    expect((await admin('POST', '/v1/agents', { id: agent.id, name: agent.id, jwks: jwksOf(agent.key) })).status).toBe(201);
    expect((await admin('PATCH', '/v1/orchestrators/orch-1', { allowed_agents: ['agent-1', 'agent-2', 'agent-rotated', agent.id] })).status).toBe(200);
    const task = await createTask(second, world.orchestrator, { agent_id: agent.id });
    expect((await tokenRequest(second.issuer, agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
    await changeBehindTheSecond(agent.id, { jwks: jwksOf(await createClientKey()) }, '/v1/agents');
    const since = await head();

    // Outside the task's purpose: a fresh copy would refuse the client before the policy is asked.
    const outside = [
      { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_9', amount_max: 100, currency: 'usd' } },
    ];
    const refused = await tokenRequest(second.issuer, agent, exchangeFields(task.task_token, outside));
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    expect(await eventsSince(since)).toEqual([{ type: 'token.refused', outcome: 'failure', reason: 'assertion_key', actor_id: null }]);
    const { rows } = await first.runtime.pool.query(`SELECT refusals, out_of_purpose_requests FROM tasks WHERE id = $1`, [task.task_id]);
    expect(rows[0]).toEqual({ refusals: 0, out_of_purpose_requests: 0 });
  });

  it('refuses on the other instance, at once, an agent suspended through the admin API', async () => {
    const task = await createTask(second, world.orchestrator, { agent_id: 'agent-2' });
    expect((await tokenRequest(second.issuer, world.otherAgent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
    await changeBehindTheSecond('agent-2', { status: 'suspended' }, '/v1/agents');
    const since = await head();

    const refused = await tokenRequest(second.issuer, world.otherAgent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    expect(await eventsSince(since)).toEqual([{ type: 'token.refused', outcome: 'failure', reason: 'client_inactive', actor_id: null }]);
    expect((await admin('PATCH', '/v1/agents/agent-2', { status: 'active' })).status).toBe(200);
  });

  it('refuses on the other instance, at once, an agent deleted through the admin API', async () => {
    const agent: TestClient = { id: 'agent-deleted', key: await createClientKey() };
    expect((await admin('POST', '/v1/agents', { id: agent.id, name: agent.id, jwks: jwksOf(agent.key) })).status).toBe(201);
    expect((await admin('PATCH', '/v1/orchestrators/orch-1', { allowed_agents: ['*'] })).status).toBe(200);
    const task = await createTask(second, world.orchestrator, { agent_id: agent.id });
    expect((await tokenRequest(second.issuer, agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
    const stale = secondHeld().get(agent.id);
    expect(stale).toBeDefined();
    expect((await admin('DELETE', `/v1/agents/${agent.id}`)).status).toBe(204);
    expect(
      await eventually(
        () => secondHeld().get(agent.id),
        (held) => held === undefined,
      ),
    ).toBeUndefined();
    secondHeld().remember(agent.id, stale!, secondHeld().mark());
    const since = await head();

    const refused = await tokenRequest(second.issuer, agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    // Its task was revoked with it: a stale copy would have had that refusal recorded under the agent.
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    expect(await eventsSince(since)).toEqual([{ type: 'token.refused', outcome: 'failure', reason: 'client_unknown', actor_id: null }]);
  });

  it("refuses on the other instance, at once, a Tasks API token for an orchestrator key removed through the admin API, and the orchestrator's introspection", async () => {
    const orchestrator: TestClient = { id: 'orch-rotated', key: await createClientKey() };
    expect(
      (await admin('POST', '/v1/orchestrators', { id: orchestrator.id, name: orchestrator.id, jwks: jwksOf(orchestrator.key), allowed_agents: ['*'] })).status,
    ).toBe(201);
    const granted = await tokenRequest(second.issuer, orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(granted.status).toBe(200);
    const stale = await changeBehindTheSecond(orchestrator.id, { jwks: jwksOf(await createClientKey()) }, '/v1/orchestrators');

    const refused = await tokenRequest(second.issuer, orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    const { rows } = await first.runtime.pool.query(`SELECT count(*)::int AS n FROM access_tokens WHERE client_id = $1`, [orchestrator.id]);
    expect(rows[0].n).toBe(1);

    // Introspection and revocation act on a fresh read of the registration.
    secondHeld().remember(orchestrator.id, stale, secondHeld().mark());
    expect(secondHeld().get(orchestrator.id)).toBe(stale);
    const introspected = await postForm(`${second.issuer}/oauth2/introspect`, {
      token: granted.body.access_token,
      ...(await clientAuthFields(orchestrator.id, orchestrator.key, second.issuer)),
    });
    expect(introspected.status).toBe(401);
    const revoked = await postForm(`${second.issuer}/oauth2/revoke`, {
      token: granted.body.access_token,
      ...(await clientAuthFields(orchestrator.id, orchestrator.key, second.issuer)),
    });
    expect(revoked.status).toBe(401);
  });

  it('drops every held registration on a notification that names none (empty, or too long to be an id)', async () => {
    await tokenRequest(second.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(secondHeld().size).toBeGreaterThan(0);
    // An id that is held by no one: what is held stays.
    await first.runtime.pool.query(`SELECT pg_notify('writ_client_changed', $1)`, ["nobody'; DROP TABLE agents; --"]);
    await first.runtime.pool.query(`SELECT pg_notify('writ_client_changed', 'orch-1')`);
    expect(
      await eventually(
        () => secondHeld().get('orch-1'),
        (held) => held === undefined,
      ),
    ).toBeUndefined();
    await tokenRequest(second.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(secondHeld().get('orch-1')).toBeDefined();
    await first.runtime.pool.query(`SELECT pg_notify('writ_client_changed', repeat('x', 7000))`);
    expect(
      await eventually(
        () => secondHeld().size,
        (size) => size === 0,
      ),
    ).toBe(0);
    await tokenRequest(second.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(secondHeld().get('orch-1')).toBeDefined();
    await first.runtime.pool.query(`SELECT pg_notify('writ_client_changed', '')`);
    expect(
      await eventually(
        () => secondHeld().size,
        (size) => size === 0,
      ),
    ).toBe(0);
  });

  it('holds nothing while the listening connection is down, and listens again', async () => {
    await tokenRequest(second.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(secondHeld().get('orch-1')).toBeDefined();
    await first.runtime.pool.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'writ-listen' AND datname = current_database()`,
    );
    expect(
      await eventually(
        () => secondRegistry().listening,
        (listening) => !listening,
      ),
    ).toBe(false);
    expect(secondHeld().size).toBe(0);
    // Requests are answered meanwhile, from PostgreSQL.
    expect((await tokenRequest(second.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' })).status).toBe(200);
    expect(
      await eventually(
        () => secondRegistry().listening,
        (listening) => listening,
      ),
    ).toBe(true);
    expect((await tokenRequest(second.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' })).status).toBe(200);
    expect(secondHeld().get('orch-1')).toBeDefined();
  });

  it('reloads signing keys on every instance when one rotates', async () => {
    const before = second.runtime.signingKeys.activeKid();
    expect((await admin('POST', '/v1/keys/rotate')).status).toBe(201);
    const rotated = first.runtime.signingKeys.activeKid();
    expect(rotated).not.toBe(before);
    expect(
      await eventually(
        () => second.runtime.signingKeys.activeKid(),
        (kid) => kid === rotated,
      ),
    ).toBe(rotated);
  });

  it('decides the next request on the other instance with a policy activated on the first, even before it is installed there', async () => {
    const stale = second.policy.current();
    const data = JSON.parse(JSON.stringify(stale.data));
    data.writ.config.approval = { payments: { constraint: 'amount_max', above: 10000 } };
    const changed = await admin('PUT', '/v1/policies/data', { data });
    expect(changed.status).toBe(200);
    expect(
      await eventually(
        () => second.policy.current().version,
        (version) => version === changed.body.version,
      ),
    ).toBe(changed.body.version);
    // As if the notification had not arrived yet: the second instance still runs the old policy.
    second.policy.install(stale, 'test', 'database');

    const task = await createTask(second, world.orchestrator);
    const response = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(response.body.error).toBe('authorization_pending');
    expect(second.policy.current().version).toBe(changed.body.version);
    await second.runtime.audit.drain();
    const { rows } = await first.runtime.pool.query(
      `SELECT type, data->>'policy_version' AS version FROM audit_events WHERE task_id = $1 AND type IN ('grant.decision', 'token.issued') ORDER BY seq`,
      [task.task_id],
    );
    expect(rows).toEqual([{ type: 'grant.decision', version: changed.body.version }]);
    const { rows: tokens } = await first.runtime.pool.query(`SELECT 1 FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(tokens).toHaveLength(0);
  });

  it('decides the next request on the other instance with its file once the stored policy is deactivated on the first, even before it is told', async () => {
    const stored = second.policy.current();
    expect(second.policy.installedFromElsewhere).toBe(true);
    expect((await admin('DELETE', '/v1/policies/active')).status).toBe(204);
    expect(
      await eventually(
        () => second.policy.installedFromElsewhere,
        (elsewhere) => !elsewhere,
      ),
    ).toBe(false);
    const fileVersion = second.policy.current().version;
    // As if the notification had not arrived yet: the second instance still runs the stored policy.
    second.policy.install(stored, 'test', 'database');

    const task = await createTask(second, world.orchestrator);
    const response = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(response.status).toBe(200);
    expect(second.policy.current().version).toBe(fileVersion);
    const { rows } = await first.runtime.pool.query(`SELECT policy_version FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(rows).toEqual([{ policy_version: fileVersion }]);
  });

  it("issues on the other instance with an operation's risk raised on the first, even before it is told", async () => {
    // `payouts.create` as a read: no use limit, the longer lifetime.
    const asRead = PAYMENTS_OPERATIONS.map((operation) => (operation.name === 'payouts.create' ? { ...operation, risk: 'read' as const } : operation));
    await seedConnector(first.runtime.pool, 'ledger-risk', asRead);
    const allowed = PAYOUT_ALLOWED.map((entry) => ({ ...entry, connector: 'ledger-risk' }));
    const request = PAYOUT_REQUEST.map((detail) => ({ ...detail, connector: 'ledger-risk' }));
    const warm = await createTask(second, world.orchestrator, { allowed });
    expect((await tokenRequest(second.issuer, world.agent, exchangeFields(warm.task_token, request))).status).toBe(200);
    const held = () =>
      (second.apps[0].get<ExchangeContextRepository>(ExchangeContextRepository) as unknown as { catalogue: ListenedCache<CatalogueConnector> }).catalogue;
    const stale = held().get('ledger-risk');
    expect(stale?.operations.find((operation) => operation.name === 'payouts.create')?.risk).toBe('read');

    const task = await createTask(second, world.orchestrator, { allowed });
    // The operation becomes a write through the first instance's admin API (its method, path and
    // constraints unchanged: no credential is revoked by it).
    expect((await admin('PATCH', '/v1/connectors/ledger-risk', { operations: PAYMENTS_OPERATIONS })).status).toBe(200);
    expect(
      await eventually(
        () => held().get('ledger-risk'),
        (copy) => copy === undefined,
      ),
    ).toBeUndefined();
    // As if the notification had not arrived yet: the second still holds the catalogue with the read.
    held().remember('ledger-risk', stale!, held().mark());

    const response = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, request));
    expect(response.status).toBe(200);
    // What a fresh instance issues: a write's credential (one use, the shorter lifetime).
    const { rows } = await first.runtime.pool.query<{ risk: string; max_uses: number | null; ttl: number }>(
      `SELECT risk, max_uses, extract(epoch FROM expires_at - issued_at)::int AS ttl FROM access_tokens WHERE task_id = $1`,
      [task.task_id],
    );
    expect(rows).toEqual([{ risk: 'write', max_uses: 1, ttl: 120 }]);
    expect(
      held()
        .get('ledger-risk')
        ?.operations.find((operation) => operation.name === 'payouts.create')?.risk,
    ).toBe('write');
  });

  it('counts no refusal on the other instance for an operation added to the catalogue on the first, even before it is told', async () => {
    const withoutRefund = PAYMENTS_OPERATIONS.filter((operation) => operation.name !== 'payouts.refund');
    await seedConnector(first.runtime.pool, 'ledger-added', withoutRefund);
    const allowed = PAYOUT_ALLOWED.map((entry) => ({ ...entry, connector: 'ledger-added' }));
    const request = PAYOUT_REQUEST.map((detail) => ({ ...detail, connector: 'ledger-added' }));
    const warm = await createTask(second, world.orchestrator, { allowed });
    expect((await tokenRequest(second.issuer, world.agent, exchangeFields(warm.task_token, request))).status).toBe(200);
    const held = () =>
      (second.apps[0].get<ExchangeContextRepository>(ExchangeContextRepository) as unknown as { catalogue: ListenedCache<CatalogueConnector> }).catalogue;
    const stale = held().get('ledger-added');
    expect(stale?.operations.map((operation) => operation.name)).not.toContain('payouts.refund');

    // The operation is added through the first instance's admin API, and a task declares it.
    expect((await admin('PATCH', '/v1/connectors/ledger-added', { operations: PAYMENTS_OPERATIONS })).status).toBe(200);
    expect(
      await eventually(
        () => held().get('ledger-added'),
        (copy) => copy === undefined,
      ),
    ).toBeUndefined();
    const refund = [{ type: 'connector', connector: 'ledger-added', actions: ['payouts.refund'] }];
    const task = await createTask(second, world.orchestrator, { allowed: refund });
    // As if the notification had not arrived yet: the second still holds the catalogue without it.
    held().remember('ledger-added', stale!, held().mark());

    const response = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, refund));
    // The answer a fresh instance gives, and no refusal counted against the task.
    expect(response.body.error_description).toBeUndefined();
    expect(response.status).toBe(200);
    const { rows } = await first.runtime.pool.query(`SELECT refusals, out_of_purpose_requests, status FROM tasks WHERE id = $1`, [task.task_id]);
    expect(rows).toEqual([{ refusals: 0, out_of_purpose_requests: 0, status: 'active' }]);
  });

  it("decides on the other instance against a connector's catalogue changed on the first, even before it is told", async () => {
    await seedConnector(first.runtime.pool, 'ledger-held', PAYMENTS_OPERATIONS);
    const allowed = PAYOUT_ALLOWED.map((entry) => ({ ...entry, connector: 'ledger-held' }));
    const request = PAYOUT_REQUEST.map((detail) => ({ ...detail, connector: 'ledger-held' }));
    // Warm: the second instance decides with the catalogue and holds it.
    const warm = await createTask(second, world.orchestrator, { allowed });
    expect((await tokenRequest(second.issuer, world.agent, exchangeFields(warm.task_token, request))).status).toBe(200);
    const held = () =>
      (second.apps[0].get<ExchangeContextRepository>(ExchangeContextRepository) as unknown as { catalogue: ListenedCache<CatalogueConnector> }).catalogue;
    const stale = held().get('ledger-held');
    expect(stale?.operations.map((operation) => operation.name)).toContain('payouts.create');

    const task = await createTask(second, world.orchestrator, { allowed });
    // The operation goes from the catalogue through the first instance's admin API.
    const remaining = PAYMENTS_OPERATIONS.filter((operation) => operation.name !== 'payouts.create');
    expect((await admin('PATCH', '/v1/connectors/ledger-held', { operations: remaining })).status).toBe(200);
    expect(
      await eventually(
        () => held().get('ledger-held'),
        (copy) => copy === undefined,
      ),
    ).toBeUndefined();
    // As if the notification had not arrived yet: the second still holds the old catalogue.
    held().remember('ledger-held', stale!, held().mark());

    const response = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, request));
    // The answer a fresh instance gives: decided again on the catalogue as it is now.
    expect(response.status).toBe(400);
    expect(response.body.error_description).toMatch(/operation payouts.create is not in the catalogue of connector ledger-held/);
    const { rows: tokens } = await first.runtime.pool.query(`SELECT 1 FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(tokens).toHaveLength(0);
    expect(
      held()
        .get('ledger-held')
        ?.operations.map((operation) => operation.name),
    ).not.toContain('payouts.create');
  });
});
