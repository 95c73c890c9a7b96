import { generateKeyPair } from 'jose';
import * as oauth from 'oauth4webapi';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_standards_dpop_31aa';

/**
 * oauth4webapi's own DPoP implementation against Writ: it binds the credential at the token
 * endpoint and proves possession at the gateway, unmodified.
 */
describe('a strict OAuth client (oauth4webapi) with DPoP', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let as: oauth.AuthorizationServer;
  const insecure = { [oauth.allowInsecureRequests]: true };
  const agent: oauth.Client = { client_id: 'agent-1' };

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    const issuer = new URL(services.issuer);
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }));
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  /** Exchanges a fresh task's token for a DPoP-bound payout credential with oauth4webapi, then pays through the gateway. */
  async function bindAndPay(dpop: oauth.DPoPHandle): Promise<{ tokens: oauth.TokenEndpointResponse; paid: Response }> {
    const task = await createTask(services, world.orchestrator);
    const auth = oauth.PrivateKeyJwt({ key: world.agent.key.privateKey, kid: world.agent.key.publicJwk.kid });
    const response = await oauth.genericTokenEndpointRequest(
      as,
      agent,
      auth,
      'urn:ietf:params:oauth:grant-type:token-exchange',
      {
        subject_token: task.task_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        authorization_details: JSON.stringify(PAYOUT_REQUEST),
      },
      { ...insecure, DPoP: dpop },
    );
    const tokens = await oauth.processGenericTokenEndpointResponse(as, agent, response);
    const paid = await oauth.protectedResourceRequest(
      tokens.access_token,
      'POST',
      new URL(`${services.gatewayUrl}/connectors/payments/v1/payouts`),
      new Headers({ 'content-type': 'application/json' }),
      JSON.stringify({ destination: 'acct_1', amount: 42000, currency: 'usd' }),
      { ...insecure, DPoP: dpop },
    );
    return { tokens, paid };
  }

  it('gets a DPoP-bound credential and spends it at the gateway with its own proofs', async () => {
    expect(as.dpop_signing_alg_values_supported).toContain('ES256');
    const { tokens, paid } = await bindAndPay(oauth.DPoP(agent, await generateKeyPair('ES256', { extractable: true })));
    expect(tokens.token_type).toBe('dpop');
    expect(paid.status).toBe(201);
    expect(upstream.received[upstream.received.length - 1].headers.authorization).toBe(`Bearer ${SECRET}`);

    // Without its proof the credential is refused, with a DPoP challenge.
    const bare = await fetch(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `DPoP ${tokens.access_token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(bare.status).toBe(401);
    expect(bare.headers.get('www-authenticate')).toMatch(/^DPoP /);
  });

  it('takes proofs signed with an Ed25519 key, which oauth4webapi labels with the fully-specified alg Ed25519', async () => {
    expect(as.dpop_signing_alg_values_supported).toContain('Ed25519');
    const { tokens, paid } = await bindAndPay(oauth.DPoP(agent, await generateKeyPair('Ed25519', { extractable: true })));
    expect(tokens.token_type).toBe('dpop');
    expect(paid.status).toBe(201);
  });
});
