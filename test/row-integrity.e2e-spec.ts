import { readFile } from 'node:fs/promises';
import { Pool } from 'pg';
import {
  APPROVAL_INTEGRITY_COLUMNS,
  approvalIntegrityFieldsOf,
  type ApprovalIntegrityRow,
  IDENTITY_PROVIDER_INTEGRITY_COLUMNS,
  identityProviderIntegrityFieldsOf,
  type IdentityProviderIntegrityRow,
  POLICY_INTEGRITY_COLUMNS,
  policyIntegrityFieldsOf,
  type PolicyIntegrityRow,
} from '@writ/grants';
import { loadPolicyEngine } from '@writ/platform';
import { clientAssertion, createClientKey, jwksOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { ConnectorCache } from '../apps/connector-gateway/src/catalogue/connector-cache';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { eventually } from './support/eventually';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { http, postForm, sendJson, TestClient, TestResponse, tokenRequest } from './support/oauth-client';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { integrityFailures, loggedIntegrityRefusals, scrape } from './support/metrics';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

/**
 * The rows that grant authority (tasks, agents, orchestrators) against a database administrator:
 * full control of PostgreSQL (the cluster's superuser, `dba` here), no master key. What they
 * write by hand into those rows is refused where the rows grant; what Writ writes keeps working.
 */
describe('row integrity tags against a database administrator', () => {
  let services: TestServices;
  let world: World;
  let dba: Pool;
  const logs: string[] = [];
  /** A payout the attacker wants, outside what the task declared (acct_1, at most 500.00). */
  const WIDE_REQUEST = [
    {
      type: 'connector',
      connector: 'payments',
      actions: ['payouts.create'],
      constraints: { destination: 'acct_evil', amount_max: 9_000_000, currency: 'usd' },
    },
  ];
  const WIDE_ALLOWED = [
    {
      type: 'connector',
      connector: 'payments',
      actions: ['payouts.create'],
      constraints: { destination: 'acct_evil', amount_max: 9_000_000, currency: 'usd' },
    },
  ];

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp, logSink: (line) => logs.push(line) });
    world = await seedWorld(services.runtime.pool);
    dba = new Pool({ connectionString: services.db.url, max: 2 });
  });
  afterAll(async () => {
    await dba.end();
    await services.close();
  });

  const exchange = (taskToken: string, details: unknown = PAYOUT_REQUEST, agent: TestClient = world.agent) =>
    tokenRequest(services.issuer, agent, exchangeFields(taskToken, details));
  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);
  /** The error log lines naming a refused row of `table`. */
  const refusals = (table: string, id: string) =>
    logs
      .map((line) => JSON.parse(line) as { level: number; table?: string; id?: string; msg: string })
      .filter((line) => line.level === 50 && line.table === table && line.id === id && /integrity tag/.test(line.msg));

  it("refuses the exchange of a task whose allowed list was widened by hand (invalid_grant), logging the task's table and id", async () => {
    const task = await createTask(services, world.orchestrator);
    expect((await exchange(task.task_token)).status).toBe(200);
    await dba.query('UPDATE tasks SET allowed = $2 WHERE id = $1', [task.task_id, JSON.stringify([...PAYOUT_ALLOWED, ...WIDE_ALLOWED])]);
    for (const details of [WIDE_REQUEST, PAYOUT_REQUEST]) {
      const refused = await exchange(task.task_token, details);
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('invalid_grant');
    }
    expect(refusals('tasks', task.task_id).length).toBeGreaterThan(0);
    // No secret in what was logged: the table and the id only.
    expect(logs.join('\n')).not.toContain(task.task_token);
  });

  it('refuses a later deadline or other limits set by hand just the same', async () => {
    const task = await createTask(services, world.orchestrator, { ttl_seconds: 60 });
    // Exchanged first: the instance has verified (and remembers) the row as it was.
    expect((await exchange(task.task_token)).status).toBe(200);
    await dba.query(`UPDATE tasks SET expires_at = expires_at + interval '30 days' WHERE id = $1`, [task.task_id]);
    expect((await exchange(task.task_token)).body.error).toBe('invalid_grant');
    const limited = await createTask(services, world.orchestrator, { allowed: [{ ...PAYOUT_ALLOWED[0], limits: { calls: 1 } }] });
    expect((await exchange(limited.task_token)).status).toBe(200);
    await dba.query(`UPDATE tasks SET allowed = jsonb_set(allowed, '{0,limits,calls}', '1000') WHERE id = $1`, [limited.task_id]);
    expect((await exchange(limited.task_token)).body.error).toBe('invalid_grant');
  });

  it('refuses a task row replaced by a copy of another (tag included) with its agent changed', async () => {
    // The other agent's own, narrow task; the DBA swaps its row for a copy of agent-1's wide one.
    const wide = await createTask(services, world.orchestrator, { allowed: [...PAYOUT_ALLOWED, ...WIDE_ALLOWED] });
    const narrow = await createTask(services, world.orchestrator, { agent_id: 'agent-2', allowed: [PAYOUT_ALLOWED[1]] });
    const { rows } = await dba.query<{ jti: string }>('SELECT task_token_jti AS jti FROM tasks WHERE id = $1', [narrow.task_id]);
    const narrowJti = rows[0].jti;
    await dba.query('DELETE FROM tasks WHERE id = $1', [narrow.task_id]);
    await dba.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti, created_at, expires_at, integrity_tag)
       SELECT $2, 'agent-2', orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, $3, created_at, expires_at, integrity_tag
         FROM tasks WHERE id = $1`,
      [wide.task_id, narrow.task_id, narrowJti],
    );
    const refused = await exchange(narrow.task_token, WIDE_REQUEST, world.otherAgent);
    expect(refused.body.error).toBe('invalid_grant');
    // And the original, untouched, still works for its own agent.
    expect((await exchange(wide.task_token, WIDE_REQUEST)).status).toBe(200);
  });

  it('verifies the tasks Writ wrote whatever their JSON holds (numbers, keys, text PostgreSQL normalises), or refuses them at declaration', async () => {
    const token = await tasksToken(services, world.orchestrator);
    const declare = (metadataText: string, purpose = '"p"') =>
      http(`${services.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: `{"agent_id":"agent-1","purpose":${purpose},"allowed":${JSON.stringify(PAYOUT_ALLOWED)},"ttl_seconds":60,"metadata":${metadataText}}`,
      });
    const cases: Array<[string, string?]> = [
      ['{"a":1e21,"b":0.30000000000000004,"c":1.0,"d":-0,"e":5e-324,"f":1E+2,"g":-1.5e-7}'],
      ['{"z":1,"\\uffff":2,"\\ud83d\\ude00":3,"é":4,"e\\u0301":5,"":6,"aa":7,"b":8}'],
      ['{"n":[[],{},null,true,false,"\\u001f\\u007f\\u2028"],"deep":{"x":{"y":{"z":[1,[2,[3]]]}}}}'],
      ['{"a":12345678901234567890}'],
      ['{"a":1e400}'],
      ['{"a":"\\ud800"}'],
      ['{"__proto__":{"x":1}}'],
      ['{"constructor":{"prototype":1},"toJSON":"x"}'],
      ['{"a":1,"a":2}'],
      ['{}', '"\\ud800"'],
      ['{}', '"a\\u0000b"'],
      ['{}', '"\\ufeffpurpose \\u00e9 e\\u0301 \\ud83d\\ude00"'],
    ];
    const statuses: number[] = [];
    for (const [metadata, purpose] of cases) {
      const declared = await declare(metadata, purpose);
      statuses.push(declared.status);
      if (declared.status === 201) {
        const exchanged = await exchange(declared.body.task_token);
        expect({ metadata, purpose, status: exchanged.status, error: exchanged.body.error }).toEqual({ metadata, purpose, status: 200, error: undefined });
      } else {
        expect({ metadata, purpose, status: declared.status }).toEqual({ metadata, purpose, status: 400 });
      }
    }
    // The well-formed ones were declared (and exchanged above), not refused.
    expect([statuses[0], statuses[1], statuses[2], statuses[statuses.length - 1]]).toEqual([201, 201, 201, 201]);
  });

  it("refuses a task whose deadline the DBA set to 'infinity', and only that one of the exchanges read with it", async () => {
    const forged = await createTask(services, world.orchestrator);
    const honest = await createTask(services, world.orchestrator);
    expect((await exchange(forged.task_token)).status).toBe(200);
    await dba.query(`UPDATE tasks SET expires_at = 'infinity' WHERE id = $1`, [forged.task_id]);
    // Sent together: their task rows are read in one query.
    const [refused, served] = await Promise.all([exchange(forged.task_token), exchange(honest.task_token)]);
    expect([refused.status, refused.body.error]).toEqual([400, 'invalid_grant']);
    expect(served.status).toBe(200);
  });

  it('signs no task token again for a declaration whose task row the DBA changed (an Idempotency-Key replay)', async () => {
    const token = await tasksToken(services, world.orchestrator);
    const body = JSON.stringify({ agent_id: 'agent-1', purpose: 'p', allowed: PAYOUT_ALLOWED, ttl_seconds: 60 });
    const declare = () =>
      http(`${services.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': 'replayed-after-dba' },
        body,
      });
    const first = await declare();
    expect(first.status).toBe(201);
    expect((await declare()).body.task_id).toBe(first.body.task_id);
    // A later deadline set by hand: a replay would sign it into a task token.
    await dba.query(`UPDATE tasks SET expires_at = expires_at + interval '30 days' WHERE id = $1`, [first.body.task_id]);
    const replayed = await declare();
    expect(replayed.status).toBe(409);
    expect(replayed.body.task_token).toBeUndefined();
  });

  it("refuses a task carrying another task's valid tag", async () => {
    const first = await createTask(services, world.orchestrator);
    const second = await createTask(services, world.orchestrator);
    await dba.query('UPDATE tasks SET integrity_tag = (SELECT integrity_tag FROM tasks WHERE id = $2) WHERE id = $1', [second.task_id, first.task_id]);
    expect((await exchange(second.task_token)).body.error).toBe('invalid_grant');
    expect((await exchange(first.task_token)).status).toBe(200);
  });

  it("refuses the attacker's assertion after the DBA swaps an agent's public key for theirs, also when the honest registration was cached", async () => {
    const victim = await seedAgent(services.runtime.pool, 'agent-victim');
    const attacker = await createClientKey();
    // Cached: the honest registration authenticated once.
    expect((await tokenRequest(services.issuer, victim, { grant_type: 'client_credentials' })).status).not.toBe(401);
    await dba.query('UPDATE agents SET jwks = $2 WHERE id = $1', ['agent-victim', JSON.stringify(jwksOf(attacker))]);
    // The change is notified and the cached row dropped (the honest key, no longer in the row, is refused)…
    const honest = () => tokenRequest(services.issuer, victim, { grant_type: 'client_credentials' });
    expect((await eventually(honest, (response) => response.status === 401)).status).toBe(401);
    // …and the row read again does not verify: the attacker's key is refused too.
    const refused = await tokenRequest(services.issuer, { id: 'agent-victim', key: attacker }, { grant_type: 'client_credentials' });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    expect(refusals('agents', 'agent-victim').length).toBeGreaterThan(0);
    // The DBA's key added beside the honest one: both refused (the whole registration is untrusted).
    await dba.query('UPDATE agents SET jwks = $2 WHERE id = $1', ['agent-victim', JSON.stringify(jwksOf(victim.key, attacker))]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await honest()).body.error).toBe('invalid_client');
    expect((await tokenRequest(services.issuer, { id: 'agent-victim', key: attacker }, { grant_type: 'client_credentials' })).body.error).toBe(
      'invalid_client',
    );
  });

  it('refuses an agent or orchestrator the DBA inserted with their own key, untagged or with a tag copied from another row', async () => {
    const key = await createClientKey();
    await dba.query(`INSERT INTO orchestrators (id, name, status, jwks, allowed_agents) VALUES ('orch-rogue', 'r', 'active', $1, '{*}')`, [
      JSON.stringify(jwksOf(key)),
    ]);
    const rogue = await tokenRequest(services.issuer, { id: 'orch-rogue', key }, { grant_type: 'client_credentials', scope: 'tasks' });
    expect(rogue.status).toBe(401);
    expect(rogue.body.error).toBe('invalid_client');
    await dba.query(`UPDATE orchestrators SET integrity_tag = (SELECT integrity_tag FROM orchestrators WHERE id = 'orch-1') WHERE id = 'orch-rogue'`);
    expect((await tokenRequest(services.issuer, { id: 'orch-rogue', key }, { grant_type: 'client_credentials', scope: 'tasks' })).body.error).toBe(
      'invalid_client',
    );
    await dba.query(
      `INSERT INTO agents (id, name, status, jwks, integrity_tag) SELECT 'agent-rogue', 'r', 'active', $1, integrity_tag FROM agents WHERE id = 'agent-1'`,
      [JSON.stringify(jwksOf(key))],
    );
    expect((await tokenRequest(services.issuer, { id: 'agent-rogue', key }, { grant_type: 'client_credentials' })).body.error).toBe('invalid_client');
  });

  it("refuses a declaration for an agent the DBA added to an orchestrator's allowed agents", async () => {
    const outsider = await seedAgent(services.runtime.pool, 'agent-outsider');
    const token = await tasksToken(services, world.orchestrator);
    await dba.query(`UPDATE orchestrators SET allowed_agents = array_append(allowed_agents, $1) WHERE id = 'orch-1'`, [outsider.id]);
    const declared = await sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      { agent_id: outsider.id, purpose: 'p', allowed: PAYOUT_ALLOWED, ttl_seconds: 60 },
      token,
    );
    expect(declared.status).toBe(401);
    expect(await dba.query('SELECT 1 FROM tasks WHERE agent_id = $1', [outsider.id])).toMatchObject({ rowCount: 0 });
    // The admin repairs it: every tagged member set through the API.
    const current = (await admin('GET', '/v1/orchestrators/orch-1')).body;
    const repaired = await admin('PATCH', '/v1/orchestrators/orch-1', {
      jwks: current.jwks,
      status: 'active',
      allowed_agents: ['agent-1', 'agent-2'],
    });
    expect(repaired.status).toBe(200);
    expect((await createTask(services, world.orchestrator)).task_id).toBeDefined();
  });

  it('refuses a Tasks API token whose access_tokens row the DBA moved to another orchestrator', async () => {
    // The victim orchestrator's registration is honest (tagged); the DBA holds orch-1's token only.
    await seedOrchestrator(services.runtime.pool, 'orch-victim', ['agent-of-orch-victim']);
    await seedAgent(services.runtime.pool, 'agent-of-orch-victim');
    const token = await tasksToken(services, world.orchestrator);
    const jti = (JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as { jti: string }).jti;
    await dba.query(`UPDATE access_tokens SET client_id = 'orch-victim' WHERE jti = $1`, [jti]);
    const declared = await sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      { agent_id: 'agent-of-orch-victim', purpose: 'p', allowed: PAYOUT_ALLOWED, ttl_seconds: 60 },
      token,
    );
    expect(declared.status).toBe(401);
    expect(await dba.query(`SELECT 1 FROM tasks WHERE agent_id = 'agent-of-orch-victim'`)).toMatchObject({ rowCount: 0 });
  });

  it('keeps a forged registration untrusted through an admin update that does not set every tagged member', async () => {
    const victim = await seedAgent(services.runtime.pool, 'agent-renamed');
    const attacker = await createClientKey();
    await dba.query('UPDATE agents SET jwks = $2 WHERE id = $1', [victim.id, JSON.stringify(jwksOf(attacker))]);
    expect((await admin('PATCH', `/v1/agents/${victim.id}`, { name: 'renamed' })).status).toBe(200);
    expect((await tokenRequest(services.issuer, { id: victim.id, key: attacker }, { grant_type: 'client_credentials' })).body.error).toBe('invalid_client');
    // Suspension still applies to it.
    expect((await admin('PATCH', `/v1/agents/${victim.id}`, { status: 'suspended' })).body.status).toBe('suspended');
  });

  it("refuses an admin token the DBA inserted (their own token's hash), or whose role or expiry they raised", async () => {
    const own = `writ_admin_${'x'.repeat(43)}`;
    await dba.query(
      `INSERT INTO admin_tokens (id, name, role, token_hash, created_by) VALUES (gen_random_uuid(), 'rogue', 'admin', encode(sha256($1::bytea), 'hex'), 'dba')`,
      [Buffer.from(own)],
    );
    const rogue = await sendJson('POST', `${services.adminUrl}/v1/agents`, { id: 'agent-by-rogue', name: 'r', jwks: jwksOf(await createClientKey()) }, own);
    expect(rogue.status).toBe(401);
    const created = await admin('POST', '/v1/admin-tokens', { name: 'reader', role: 'viewer', expires_in: 60 });
    expect(created.status).toBe(201);
    expect((await sendJson('GET', `${services.adminUrl}/v1/agents`, undefined, created.body.token)).status).toBe(200);
    await dba.query(`UPDATE admin_tokens SET role = 'admin' WHERE id = $1`, [created.body.id]);
    expect(
      (
        await sendJson(
          'POST',
          `${services.adminUrl}/v1/agents`,
          { id: 'agent-by-viewer', name: 'v', jwks: jwksOf(await createClientKey()) },
          created.body.token,
        )
      ).status,
    ).toBe(401);
    await dba.query(`UPDATE admin_tokens SET role = 'viewer', expires_at = expires_at + interval '1 year' WHERE id = $1`, [created.body.id]);
    expect((await sendJson('GET', `${services.adminUrl}/v1/agents`, undefined, created.body.token)).status).toBe(401);
    expect(refusals('admin_tokens', created.body.id).length).toBeGreaterThan(0);
    expect(await dba.query(`SELECT 1 FROM agents WHERE id IN ('agent-by-rogue', 'agent-by-viewer')`)).toMatchObject({ rowCount: 0 });
  });

  it('never lets a token create one outliving it after the DBA lifts its expiry while it is being used', async () => {
    const made = await admin('POST', '/v1/admin-tokens', { name: 'day-pass', role: 'admin', expires_in: 3600 });
    expect(made.status).toBe(201);
    // The DBA lifts the expiry in a transaction held open while the request authenticates (it
    // reads the committed row, which verifies) and commits once the request waits on the row.
    const held = await dba.connect();
    try {
      await held.query('BEGIN');
      await held.query('UPDATE admin_tokens SET expires_at = NULL WHERE id = $1', [made.body.id]);
      const pending = sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'forever', role: 'admin' }, made.body.token);
      await eventually(
        async () => (await dba.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%admin_tokens%'`)).rowCount,
        (count) => count !== null && count > 0,
      );
      await held.query('COMMIT');
      const created = await pending;
      expect(created.status).toBe(401);
      expect(await dba.query(`SELECT 1 FROM admin_tokens WHERE name = 'forever'`)).toMatchObject({ rowCount: 0 });
    } finally {
      held.release();
    }
  });

  it('keeps the legitimate flows working: admin create, key rotation, suspension, allowed agents, Tasks API', async () => {
    const first = await createClientKey();
    const created = await admin('POST', '/v1/agents', { id: 'agent-admin', name: 'a', jwks: jwksOf(first) });
    expect(created.status).toBe(201);
    const orchestratorKey = await createClientKey();
    expect((await admin('POST', '/v1/orchestrators', { id: 'orch-admin', name: 'o', jwks: jwksOf(orchestratorKey), allowed_agents: [] })).status).toBe(201);
    const orchestrator = { id: 'orch-admin', key: orchestratorKey };
    expect((await admin('PATCH', '/v1/orchestrators/orch-admin', { allowed_agents: ['agent-admin'] })).status).toBe(200);
    const task = await createTask(services, orchestrator, { agent_id: 'agent-admin' });
    expect((await exchange(task.task_token, PAYOUT_REQUEST, { id: 'agent-admin', key: first })).status).toBe(200);
    // Key rotation through the admin API: the new key works, the old one no longer does.
    const second = await createClientKey();
    expect((await admin('PATCH', '/v1/agents/agent-admin', { jwks: jwksOf(second) })).status).toBe(200);
    const rotated = await eventually(
      () => exchange(task.task_token, PAYOUT_REQUEST, { id: 'agent-admin', key: second }),
      (response) => response.status === 200,
    );
    expect(rotated.status).toBe(200);
    expect((await exchange(task.task_token, PAYOUT_REQUEST, { id: 'agent-admin', key: first })).body.error).toBe('invalid_client');
    // Suspension and reactivation.
    expect((await admin('PATCH', '/v1/agents/agent-admin', { status: 'suspended' })).status).toBe(200);
    expect((await admin('PATCH', '/v1/agents/agent-admin', { status: 'active' })).status).toBe(200);
    const again = await createTask(services, orchestrator, { agent_id: 'agent-admin' });
    expect((await exchange(again.task_token, PAYOUT_REQUEST, { id: 'agent-admin', key: second })).status).toBe(200);
    // A task with a verified user (set with the task, covered by its tag) and one with limits.
    const limited = await createTask(services, world.orchestrator, { allowed: [{ ...PAYOUT_ALLOWED[0], limits: { calls: 2 } }], on_behalf_of: 'alice' });
    expect((await exchange(limited.task_token)).status).toBe(200);
    // Counters and status change legitimately: the task stays usable until it ends.
    expect((await exchange(limited.task_token, WIDE_REQUEST)).body.error).toBe('invalid_authorization_details');
    expect((await exchange(limited.task_token)).status).toBe(200);
  });

  it('counts every refusal it logged in writ_integrity_failures_total, by table', async () => {
    const counted = integrityFailures(await scrape(services.adminUrl));
    expect(counted).toEqual(loggedIntegrityRefusals(logs));
    expect(Object.keys(counted).sort()).toEqual(['admin_tokens', 'agents', 'orchestrators', 'tasks']);
  });
});

describe('row integrity of connector catalogues against a database administrator', () => {
  const SECRET = 'sk_live_catalogue_6d2f0a';
  const READ = [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }];
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let dba: Pool;
  const logs: string[] = [];

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp, logSink: (line) => logs.push(line) });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    dba = new Pool({ connectionString: services.db.url, max: 2 });
  });
  afterAll(async () => {
    await dba.end();
    await services.close();
    await upstream.close();
  });

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);
  const cache = (): ConnectorCache => {
    for (const app of services.apps) {
      try {
        return app.get(ConnectorCache);
      } catch {
        // Not the gateway.
      }
    }
    throw new Error('no gateway app');
  };
  const readCredential = async (): Promise<{ token: string; taskToken: string }> => {
    const task = await createTask(services, world.orchestrator);
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, READ));
    expect(response.status).toBe(200);
    return { token: response.body.access_token as string, taskToken: task.task_token };
  };
  const call = (method: string, path: string, token: string) =>
    http(`${services.gatewayUrl}/connectors/payments${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  /** Whether the gateway forwarded a read of an unknown payout (the upstream's own 404). */
  const forwarded = (response: TestResponse): boolean => response.status === 404 && (response.body as { error?: string }).error === 'no such payout';
  const operations = async (): Promise<Array<Record<string, unknown>>> =>
    (await dba.query<{ operations: Array<Record<string, unknown>> }>(`SELECT operations FROM connectors WHERE id = 'payments'`)).rows[0].operations;
  /** The catalogue with the read action `payouts.get` pointed at the write endpoint `POST /v1/payouts/{payout_id}/refund`. */
  const widened = (catalogue: Array<Record<string, unknown>>) =>
    catalogue.map((operation) =>
      operation.name === 'payouts.get' ? { ...operation, method: 'POST', path: '/v1/payouts/{payout_id}/refund', constraints: {} } : operation,
    );
  const refusals = (id: string) =>
    logs
      .map((line) => JSON.parse(line) as { level: number; table?: string; id?: string; msg: string })
      .filter((line) => line.level === 50 && line.table === 'connectors' && line.id === id && /integrity tag/.test(line.msg));

  it('refuses a call after the DBA points a read action at a write endpoint (cached, then dropped and read again), forwarding nothing', async () => {
    const { token } = await readCredential();
    // A first call fills the gateway's memory with the connector.
    expect(forwarded(await call('GET', '/v1/payouts/po_1', token))).toBe(true);
    expect(cache().get('payments')).toBeDefined();
    const original = await operations();
    const seen = upstream.received.length;
    await dba.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(widened(original))]);
    try {
      // The change trigger notifies writ_connector_changed: the gateway drops its copy, and reads the row again on the next call.
      await eventually(
        () => cache().get('payments'),
        (held) => held === undefined,
      );
      const write = await call('POST', '/v1/payouts/po_1/refund', token);
      expect(write.status).toBe(401);
      expect(upstream.received.length).toBe(seen);
      const read = await call('GET', '/v1/payouts/po_1', token);
      expect(read.status).toBe(401);
      expect(upstream.received.length).toBe(seen);
      // Not held: the forged row is read (and refused) on every call.
      expect(cache().get('payments')).toBeUndefined();
      expect(refusals('payments').length).toBeGreaterThan(0);
      expect(logs.join('\n')).not.toContain(SECRET);
    } finally {
      await dba.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(original)]);
    }
    // Set back to what Writ wrote, the row verifies again.
    const again = await readCredential();
    expect(forwarded(await eventually(() => call('GET', '/v1/payouts/po_1', again.token), forwarded))).toBe(true);
  });

  it('refuses a connector whose request_headers the DBA widened in SQL, forwarding nothing', async () => {
    const original = await operations();
    const listed = (extra: string[]) =>
      original.map((operation) => (operation.name === 'payouts.get' ? { ...operation, request_headers: ['Accept', ...extra] } : operation));
    // Written by Writ (tagged): payouts.get takes only the safe set and Accept.
    expect((await admin('PATCH', '/v1/connectors/payments', { operations: listed([]) })).status).toBe(200);
    const tagged = await operations();
    try {
      const { token } = await readCredential();
      const tenant = (bearer: string) =>
        http(`${services.gatewayUrl}/connectors/payments/v1/payouts/po_1`, { headers: { authorization: `Bearer ${bearer}`, 'x-tenant-id': 'other' } });
      const unlisted = await eventually(
        () => tenant(token),
        (response) => response.status === 400,
      );
      expect(unlisted.body).toMatchObject({ error: 'invalid_request', field: 'header.x-tenant-id' });
      const seen = upstream.received.length;
      await dba.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(listed(['X-Tenant-ID']))]);
      try {
        const refused = await eventually(
          () => tenant(token),
          (response) => response.status === 401,
        );
        expect(refused.status).toBe(401);
        expect(upstream.received.length).toBe(seen);
        expect(refusals('payments').length).toBeGreaterThan(0);
      } finally {
        await dba.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(tagged)]);
      }
    } finally {
      // Back to the catalogue the other tests expect, through the API (tagged again).
      expect((await admin('PATCH', '/v1/connectors/payments', { operations: original })).status).toBe(200);
    }
  });

  it('refuses a connector whose kind, base URL or credential type the DBA changed', async () => {
    const { token } = await readCredential();
    expect(forwarded(await call('GET', '/v1/payouts/po_2', token))).toBe(true);
    const seen = upstream.received.length;
    for (const change of [`kind = 'mcp'`, `credential_type = 'basic'`, `base_url = 'http://127.0.0.1:9'`]) {
      await dba.query(`UPDATE connectors SET ${change} WHERE id = 'payments'`);
      try {
        await eventually(
          () => cache().get('payments'),
          (held) => held === undefined,
        );
        expect((await call('GET', '/v1/payouts/po_2', token)).status).toBe(401);
        expect(upstream.received.length).toBe(seen);
      } finally {
        await dba.query(`UPDATE connectors SET kind = 'http', credential_type = 'bearer', base_url = $1 WHERE id = 'payments'`, [upstream.url]);
      }
    }
  });

  it('refuses, at the token exchange, a connector whose catalogue the DBA widened, and an admin rename does not launder it', async () => {
    const task = await createTask(services, world.orchestrator);
    const original = await operations();
    await dba.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(widened(original))]);
    try {
      const refused = await eventually(
        () => tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, READ)),
        (response) => response.status !== 200,
      );
      expect(refused.status).toBe(400);
      // An admin change of another member keeps the forged catalogue refused (the row is not tagged again).
      expect((await admin('PATCH', '/v1/connectors/payments', { name: 'Payments renamed' })).status).toBe(200);
      expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, READ))).status).toBe(400);
    } finally {
      await dba.query(`UPDATE connectors SET operations = $1 WHERE id = 'payments'`, [JSON.stringify(original)]);
    }
    const restored = await eventually(
      () => tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, READ)),
      (response) => response.status === 200,
    );
    expect(restored.status).toBe(200);
  });

  it('keeps working after a legitimate admin update of the catalogue', async () => {
    const original = await operations();
    const added = [...original, { name: 'balance.get', method: 'GET', path: '/v1/balance', risk: 'read', constraints: {} }];
    const updated = await admin('PATCH', '/v1/connectors/payments', { operations: added });
    expect(updated.status).toBe(200);
    const { token } = await readCredential();
    expect(forwarded(await eventually(() => call('GET', '/v1/payouts/po_3', token), forwarded))).toBe(true);
    const created = await admin('POST', '/v1/connectors', {
      id: 'made-by-admin',
      name: 'Made by admin',
      base_url: upstream.url,
      operations: [{ name: 'thing.get', method: 'GET', path: '/v1/thing', risk: 'read' }],
      credential: { type: 'bearer', token: SECRET },
    });
    expect(created.status).toBe(201);
    const tagged = await dba.query<{ integrity_tag: string | null }>(`SELECT integrity_tag FROM connectors WHERE id = 'made-by-admin'`);
    expect(tagged.rows[0].integrity_tag).toEqual(expect.any(String));
  });

  it('counts every refusal it logged in writ_integrity_failures_total, by table', async () => {
    const counted = integrityFailures(await scrape(services.adminUrl));
    expect(counted).toEqual(loggedIntegrityRefusals(logs));
    expect(Object.keys(counted).sort()).toEqual(['connectors']);
  });
});

describe('row integrity: the upgrade from untagged rows', () => {
  let first: TestServices;
  let dba: Pool;

  beforeAll(async () => {
    first = await startTestServices();
    dba = new Pool({ connectionString: first.db.url, max: 2 });
  });
  afterAll(async () => {
    await dba.end();
    await first.close();
  });

  it('tags the rows written before it once, with two instances starting at once; an untagged row after that stays refused', async () => {
    const world = await seedWorld(first.runtime.pool);
    const task = await createTask(first, world.orchestrator);
    // As before the upgrade: no tags, no marker.
    await dba.query('UPDATE tasks SET integrity_tag = NULL');
    await dba.query('UPDATE agents SET integrity_tag = NULL');
    await dba.query('UPDATE orchestrators SET integrity_tag = NULL');
    await dba.query('UPDATE admin_tokens SET integrity_tag = NULL');
    await dba.query('UPDATE connectors SET integrity_tag = NULL');
    await dba.query('DELETE FROM row_integrity_backfill');
    const [second, third] = await Promise.all([startSecondInstance(first), startSecondInstance(first)]);
    try {
      const events = await dba.query<{ actor_id: string; data: unknown }>(`SELECT actor_id, data FROM audit_events WHERE type = 'row_integrity.backfilled'`);
      expect(events.rows).toEqual([
        {
          actor_id: 'row-integrity',
          data: { tagged: { tasks: 1, agents: 2, orchestrators: 1, admin_tokens: 1, connectors: 1, identity_providers: 0, policies: 0, approvals: 0 } },
        },
      ]);
      const untagged = await dba.query(
        `SELECT id::text FROM tasks WHERE integrity_tag IS NULL UNION ALL SELECT id FROM agents WHERE integrity_tag IS NULL
         UNION ALL SELECT id FROM orchestrators WHERE integrity_tag IS NULL UNION ALL SELECT id::text FROM admin_tokens WHERE integrity_tag IS NULL
         UNION ALL SELECT id FROM connectors WHERE integrity_tag IS NULL`,
      );
      expect(untagged.rows).toEqual([]);
      // The legacy task and registrations work on the new instances.
      for (const instance of [second, third]) {
        const response = await tokenRequest(instance.issuer, world.agent, exchangeFields(task.task_token));
        expect(response.status).toBe(200);
      }
      // After the upgrade: a row the DBA leaves untagged is refused, and a restart does not tag it.
      const key = await createClientKey();
      await dba.query(`INSERT INTO agents (id, name, status, jwks) VALUES ('agent-late', 'l', 'active', $1)`, [JSON.stringify(jwksOf(key))]);
      const fourth = await startSecondInstance(first);
      try {
        const late = await postForm(`${fourth.issuer}/oauth2/token`, {
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: await clientAssertion('agent-late', key, fourth.issuer),
        });
        expect(late.body.error).toBe('invalid_client');
        expect((await dba.query(`SELECT integrity_tag FROM agents WHERE id = 'agent-late'`)).rows).toEqual([{ integrity_tag: null }]);
        expect((await dba.query(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'row_integrity.backfilled'`)).rows).toEqual([{ n: 1 }]);
      } finally {
        await fourth.close();
      }
    } finally {
      await Promise.all([second.close(), third.close()]);
    }
  }, 120_000);

  it('tags, once, the connectors of an installation upgraded before connector tags (marker without connectors_tagged)', async () => {
    await seedConnector(first.runtime.pool, 'legacy-connector');
    // As after the first upgrade but before connector tags: the marker is there, connectors untagged.
    await dba.query('UPDATE connectors SET integrity_tag = NULL');
    await dba.query('UPDATE row_integrity_backfill SET connectors_tagged = false');
    const connectors = (await dba.query<{ n: number }>('SELECT count(*)::int AS n FROM connectors')).rows[0].n;
    await dba.query(`UPDATE agents SET integrity_tag = NULL WHERE id = 'agent-2'`);
    const before = (await dba.query(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'row_integrity.backfilled'`)).rows[0].n as number;
    const second = await startSecondInstance(first);
    try {
      const events = await dba.query<{ data: unknown }>(`SELECT data FROM audit_events WHERE type = 'row_integrity.backfilled' ORDER BY seq DESC LIMIT 1`);
      expect(events.rows[0].data).toEqual({
        tagged: { tasks: 0, agents: 0, orchestrators: 0, admin_tokens: 0, connectors, identity_providers: 0, policies: 0, approvals: 0 },
      });
      expect((await dba.query(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'row_integrity.backfilled'`)).rows).toEqual([{ n: before + 1 }]);
      expect((await dba.query(`SELECT id FROM connectors WHERE integrity_tag IS NULL`)).rows).toEqual([]);
      // Only the connectors: an agent left untagged stays untagged.
      expect((await dba.query(`SELECT integrity_tag FROM agents WHERE id = 'agent-2'`)).rows).toEqual([{ integrity_tag: null }]);
    } finally {
      await second.close();
    }
    // Once: a connector left untagged after that stays untagged through a restart.
    await dba.query(`UPDATE connectors SET integrity_tag = NULL WHERE id = 'legacy-connector'`);
    const third = await startSecondInstance(first);
    try {
      expect((await dba.query(`SELECT integrity_tag FROM connectors WHERE id = 'legacy-connector'`)).rows).toEqual([{ integrity_tag: null }]);
    } finally {
      await third.close();
    }
  }, 120_000);

  it('tags, once, the identity providers, the active policy and the decided approvals of an installation upgraded before their tags', async () => {
    const [task] = (await dba.query<{ id: string }>('SELECT id FROM tasks LIMIT 1')).rows;
    // As after the earlier upgrades but before these tags: the marker is there, these rows untagged.
    await dba.query(
      `INSERT INTO identity_providers (issuer, jwks_uri, audience) VALUES ('https://idp-legacy.example', 'https://idp-legacy.example/jwks', 'writ')`,
    );
    const bundle = await readFile(first.policy.path);
    const engine = await loadPolicyEngine(bundle, null);
    await dba.query(`INSERT INTO policies (version, bundle, source, loaded_by, active) VALUES ($1, $2, 'upload', 'admin:legacy', true)`, [
      engine.version,
      bundle,
    ]);
    for (const status of ['pending', 'approved', 'denied', 'used']) {
      await dba.query(
        `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, expires_at, decided_at, decided_by)
         VALUES (gen_random_uuid(), $1, 'agent-1', 'payments', '[]', '[]', $2, $3, now() + interval '10 minutes', CASE WHEN $3 = 'pending' THEN NULL ELSE now() END, 'admin:legacy')`,
        [task.id, engine.version, status],
      );
    }
    await dba.query('UPDATE identity_providers SET integrity_tag = NULL');
    await dba.query('UPDATE approvals SET integrity_tag = NULL');
    await dba.query('UPDATE row_integrity_backfill SET providers_policies_approvals_tagged = false');
    await dba.query(`UPDATE agents SET integrity_tag = NULL WHERE id = 'agent-2'`);
    const second = await startSecondInstance(first);
    try {
      const events = await dba.query<{ data: unknown }>(`SELECT data FROM audit_events WHERE type = 'row_integrity.backfilled' ORDER BY seq DESC LIMIT 1`);
      expect(events.rows[0].data).toEqual({
        tagged: { tasks: 0, agents: 0, orchestrators: 0, admin_tokens: 0, connectors: 0, identity_providers: 1, policies: 1, approvals: 2 },
      });
      const integrity = second.runtime.rowIntegrity;
      const providers = await dba.query<IdentityProviderIntegrityRow>(`SELECT ${IDENTITY_PROVIDER_INTEGRITY_COLUMNS} FROM identity_providers`);
      expect(providers.rows.map((row) => integrity.verifyIdentityProvider(identityProviderIntegrityFieldsOf(row), row.integrity_tag))).toEqual([true]);
      const policies = await dba.query<PolicyIntegrityRow>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE active`);
      expect(policies.rows.map((row) => integrity.verifyPolicy(policyIntegrityFieldsOf(row), row.integrity_tag))).toEqual([true]);
      const approvals = await dba.query<ApprovalIntegrityRow>(`SELECT ${APPROVAL_INTEGRITY_COLUMNS} FROM approvals ORDER BY status`);
      expect(
        approvals.rows.map((row) => [row.status, row.integrity_tag !== null && integrity.verifyApproval(approvalIntegrityFieldsOf(row), row.integrity_tag)]),
      ).toEqual([
        ['approved', true],
        ['denied', true],
        ['pending', false],
        ['used', false],
      ]);
      // Only these tables: an agent left untagged stays untagged.
      expect((await dba.query(`SELECT integrity_tag FROM agents WHERE id = 'agent-2'`)).rows).toEqual([{ integrity_tag: null }]);
    } finally {
      await second.close();
    }
    // Once: a provider left untagged after that stays untagged through a restart.
    await dba.query(`UPDATE identity_providers SET integrity_tag = NULL`);
    const third = await startSecondInstance(first);
    try {
      expect((await dba.query(`SELECT integrity_tag FROM identity_providers`)).rows).toEqual([{ integrity_tag: null }]);
    } finally {
      await third.close();
    }
  }, 120_000);
});
