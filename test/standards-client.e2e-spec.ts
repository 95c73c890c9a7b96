import * as oauth from 'oauth4webapi';
import { createClientKey, jwksOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { sendJson } from './support/oauth-client';
import { PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { startTestServices, TestServices } from './support/test-services';

/**
 * An unmodified, strict standards client (oauth4webapi) that knows only the issuer URL, an
 * agent key and an orchestrator key runs the whole story.
 */
describe('a strict OAuth client (oauth4webapi) drives Writ end to end', () => {
  let services: TestServices;
  let world: World;
  let as: oauth.AuthorizationServer;
  const insecure = { [oauth.allowInsecureRequests]: true };

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    const issuer = new URL(services.issuer);
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }));
  });
  afterAll(() => services.close());

  const agentAuth = () => oauth.PrivateKeyJwt({ key: world.agent.key.privateKey, kid: world.agent.key.publicJwk.kid });
  const orchestratorAuth = () => oauth.PrivateKeyJwt({ key: world.orchestrator.key.privateKey, kid: world.orchestrator.key.publicJwk.kid });
  const agent: oauth.Client = { client_id: 'agent-1' };
  const orchestrator: oauth.Client = { client_id: 'orch-1' };

  const exchange = (taskToken: string, details: unknown) =>
    oauth.genericTokenEndpointRequest(
      as,
      agent,
      agentAuth(),
      'urn:ietf:params:oauth:grant-type:token-exchange',
      {
        subject_token: taskToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        authorization_details: JSON.stringify(details),
      },
      insecure,
    );

  it('discovers the metadata the contract promises', () => {
    expect(as.issuer).toBe(services.issuer);
    expect(as.grant_types_supported).toEqual(expect.arrayContaining(['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange']));
    expect(as.token_endpoint_auth_methods_supported).toEqual(['private_key_jwt']);
    expect(as.token_endpoint_auth_signing_alg_values_supported).toContain('ES256');
    expect((as as Record<string, unknown>).authorization_details_types_supported).toEqual(['connector']);
    expect(as.introspection_endpoint).toBe(`${services.issuer}/oauth2/introspect`);
    expect(as.revocation_endpoint).toBe(`${services.issuer}/oauth2/revoke`);
  });

  it('runs discover → client credentials → task → exchange → verify → refusal → complete → inactive → invalid_grant → audit', async () => {
    const cc = await oauth.processClientCredentialsResponse(
      as,
      orchestrator,
      await oauth.clientCredentialsGrantRequest(as, orchestrator, orchestratorAuth(), { scope: 'tasks' }, insecure),
    );
    expect(cc.scope).toBe('tasks');

    const created = await sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      {
        agent_id: 'agent-1',
        purpose: 'pay invoice INV-42 to Acme, at most 500.00 USD',
        allowed: [
          { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' } },
        ],
        ttl_seconds: 600,
      },
      cc.access_token,
    );
    expect(created.status).toBe(201);
    const { task_id, task_token } = created.body;

    const credential = await oauth.processGenericTokenEndpointResponse(as, agent, await exchange(task_token, PAYOUT_REQUEST));
    expect(credential.token_type).toBe('bearer');
    expect(credential.issued_token_type).toBe('urn:ietf:params:oauth:token-type:access_token');
    expect(credential.authorization_details).toEqual(PAYOUT_REQUEST);

    // A resource server's strict RFC 9068 validation against the published JWKS.
    const claims = await oauth.validateJwtAccessToken(
      as,
      new Request(`${services.gatewayUrl}/connectors/payments/v1/payouts`, { headers: { authorization: `Bearer ${credential.access_token}` } }),
      `${services.gatewayUrl}/connectors/payments`,
      insecure,
    );
    expect(claims).toMatchObject({ sub: 'agent-1', client_id: 'agent-1', task_id });

    // An injected instruction asks to pay someone else: refused by the policy.
    const evil = [
      {
        type: 'connector',
        connector: 'payments',
        actions: ['payouts.create'],
        constraints: { destination: 'acct_attacker', amount_max: 50000, currency: 'usd' },
      },
    ];
    const refused = await oauth.processGenericTokenEndpointResponse(as, agent, await exchange(task_token, evil)).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(oauth.ResponseBodyError);
    expect((refused as oauth.ResponseBodyError).error).toBe('invalid_authorization_details');
    expect((refused as oauth.ResponseBodyError).error_description).toMatch(/destination/);

    const completed = await sendJson('POST', `${services.issuer}/v1/tasks/${task_id}/complete`, undefined, cc.access_token);
    expect(completed.body.status).toBe('completed');

    const introspection = await oauth.processIntrospectionResponse(
      as,
      orchestrator,
      await oauth.introspectionRequest(as, orchestrator, orchestratorAuth(), credential.access_token, insecure),
    );
    expect(introspection.active).toBe(false);

    const after = await oauth.processGenericTokenEndpointResponse(as, agent, await exchange(task_token, PAYOUT_REQUEST)).catch((error: unknown) => error);
    expect((after as oauth.ResponseBodyError).error).toBe('invalid_grant');

    const { rows } = await services.runtime.pool.query('SELECT type, outcome FROM audit_events WHERE task_id = $1 ORDER BY seq', [task_id]);
    expect(rows.map((row) => `${row.type}:${row.outcome}`)).toEqual([
      'task.created:success',
      'grant.decision:success',
      'token.issued:success',
      'grant.decision:denied',
      'task.completed:success',
      'token.revoked:success',
      'token.refused:denied',
    ]);
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
  });

  it('introspects and revokes with the standard calls', async () => {
    const cc = await oauth.processClientCredentialsResponse(
      as,
      orchestrator,
      await oauth.clientCredentialsGrantRequest(as, orchestrator, orchestratorAuth(), { scope: 'tasks' }, insecure),
    );
    const active = await oauth.processIntrospectionResponse(
      as,
      orchestrator,
      await oauth.introspectionRequest(as, orchestrator, orchestratorAuth(), cc.access_token, insecure),
    );
    expect(active).toMatchObject({ active: true, client_id: 'orch-1', scope: 'tasks' });
    await oauth.processRevocationResponse(await oauth.revocationRequest(as, orchestrator, orchestratorAuth(), cc.access_token, insecure));
    const inactive = await oauth.processIntrospectionResponse(
      as,
      orchestrator,
      await oauth.introspectionRequest(as, orchestrator, orchestratorAuth(), cc.access_token, insecure),
    );
    expect(inactive.active).toBe(false);
    const refused = await sendJson('POST', `${services.issuer}/v1/tasks`, { agent_id: 'agent-1' }, cc.access_token);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token"/);
  });
  it('authenticates an orchestrator whose key is Ed25519: oauth4webapi signs its assertions with the alg Ed25519', async () => {
    expect(as.token_endpoint_auth_signing_alg_values_supported).toContain('Ed25519');
    const key = await createClientKey('Ed25519');
    const registered = await sendJson(
      'POST',
      `${services.adminUrl}/v1/orchestrators`,
      { id: 'orch-ed', name: 'ed25519 orchestrator', jwks: jwksOf(key), allowed_agents: ['agent-1'] },
      services.adminToken,
    );
    expect(registered.status).toBe(201);
    const client: oauth.Client = { client_id: 'orch-ed' };
    const auth = oauth.PrivateKeyJwt({ key: key.privateKey, kid: key.publicJwk.kid });
    const cc = await oauth.processClientCredentialsResponse(
      as,
      client,
      await oauth.clientCredentialsGrantRequest(as, client, auth, { scope: 'tasks' }, insecure),
    );
    const introspected = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, cc.access_token, insecure));
    expect(introspected).toMatchObject({ active: true, client_id: 'orch-ed', scope: 'tasks' });
  });
});
