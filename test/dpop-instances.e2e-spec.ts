import { clientAuthFields } from '@writ/testing';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm } from './support/oauth-client';
import { dpopKey, type DpopKey, proof } from './support/dpop';
import { setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { startTwoGateways, TwoGateways } from './support/two-gateways';

const SECRET = 'sk_live_dpop_instances_52b7';
/** A read: no use limit, so only the proof's jti can stop a second call. */
const READ_REQUEST = [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }];

/**
 * RFC 9449 proofs across two instances of one deployment (one database, one issuer, one
 * `WRIT_GATEWAY_URL`): each proof's `jti` is spent once on every instance, even when the copies
 * arrive at the same moment, and `htu` is the public URL whichever instance answers.
 */
describe('DPoP proofs across instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let deployment: TwoGateways;
  let key: DpopKey;

  beforeAll(async () => {
    deployment = await startTwoGateways(SECRET);
    ({ first, second, world, upstream } = deployment);
    key = await dpopKey();
  });
  afterAll(() => deployment.close());

  const tokenUrl = () => `${first.issuer}/oauth2/token`;
  const secondGateway = () => `http://127.0.0.1:${second.apps[second.apps.length - 1].getHttpServer().address().port as number}`;
  const secondAuth = () => second.authUrl;
  const readPath = '/connectors/payments/v1/payouts/po_missing';
  /** A token exchange sent to `base` (either instance's authorization server) with a fresh client assertion. */
  const exchange = async (base: string, taskToken: string, dpop: string) =>
    postForm(
      `${base}/oauth2/token`,
      { ...exchangeFields(taskToken, READ_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)) },
      { dpop },
    );
  const read = (base: string, token: string, dpop: string) => http(`${base}${readPath}`, { headers: { authorization: `DPoP ${token}`, dpop } });
  const boundReadCredential = async () => {
    const task = await createTask(first, world.orchestrator);
    const issued = await exchange(first.issuer, task.task_token, await proof(key, 'POST', tokenUrl()));
    expect(issued.status).toBe(200);
    return issued.body.access_token as string;
  };

  it('binds at most one credential with a token-endpoint proof sent to both authorization servers at once', async () => {
    const task = await createTask(first, world.orchestrator);
    const shared = await proof(key, 'POST', tokenUrl());
    const answers = await Promise.all(Array.from({ length: 8 }, (_, n) => exchange(n % 2 ? secondAuth() : first.issuer, task.task_token, shared)));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(1);
    for (const refused of answers.filter((answer) => answer.status !== 200)) {
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('invalid_dpop_proof');
    }
  });

  it('forwards once a gateway proof fired at both gateways at once, with a credential that has no use limit', async () => {
    const token = await boundReadCredential();
    const shared = await proof(key, 'GET', `${first.gatewayUrl}${readPath}`, token);
    const before = upstream.received.length;
    const answers = await Promise.all(Array.from({ length: 8 }, (_, n) => read(n % 2 ? secondGateway() : first.gatewayUrl, token, shared)));
    // The one forwarded call gets the upstream's own 404 (no such payout); every copy is a 401.
    expect(answers.map((answer) => answer.status).sort()).toEqual([401, 401, 401, 401, 401, 401, 401, 404]);
    for (const refused of answers.filter((answer) => answer.status === 401)) expect(refused.body.error).toBe('invalid_dpop_proof');
    expect(upstream.received.length).toBe(before + 1);
    // The credential itself is not spent: a fresh proof goes through, on either instance.
    expect((await read(secondGateway(), token, await proof(key, 'GET', `${first.gatewayUrl}${readPath}`, token))).status).toBe(404);
  });

  it("checks htu against WRIT_GATEWAY_URL, not the answering instance's own address", async () => {
    const token = await boundReadCredential();
    const internal = await read(secondGateway(), token, await proof(key, 'GET', `${secondGateway()}${readPath}`, token));
    expect(internal.status).toBe(401);
    expect(internal.body.error).toBe('invalid_dpop_proof');
    expect((await read(secondGateway(), token, await proof(key, 'GET', `${first.gatewayUrl}${readPath}`, token))).status).toBe(404);
  });
});

/**
 * A gateway published under a path (`WRIT_GATEWAY_URL=https://host/gw`) behind a reverse proxy
 * that strips `/gw`: the gateway sees `/connectors/…`, and `htu` is the public URL, with `/gw`.
 */
describe('DPoP behind a reverse proxy that publishes the gateway under a path', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp, gatewayPath: '/gw' });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  it('checks htu against the public URL, path included, not the path the gateway sees', async () => {
    const key = await dpopKey();
    const tokenUrl = `${services.issuer}/oauth2/token`;
    const task = await createTask(services, world.orchestrator);
    const issued = await postForm(
      tokenUrl,
      { ...exchangeFields(task.task_token, READ_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
      { dpop: await proof(key, 'POST', tokenUrl) },
    );
    expect(issued.status).toBe(200);
    const token = issued.body.access_token as string;
    expect(services.gatewayUrl).toMatch(/\/gw$/);
    const path = '/connectors/payments/v1/payouts/po_missing';
    // What the proxy hands the gateway: the path without /gw.
    const internal = services.gatewayUrl.replace(/\/gw$/, '');
    const read = async (htu: string) => http(`${internal}${path}`, { headers: { authorization: `DPoP ${token}`, dpop: await proof(key, 'GET', htu, token) } });
    const unprefixed = await read(`${internal}${path}`);
    expect(unprefixed.status).toBe(401);
    expect(unprefixed.body.error).toBe('invalid_dpop_proof');
    expect((await read(`${services.gatewayUrl}${path}`)).status).toBe(404);
  });
});
