import * as net from 'node:net';
import { decodeJwt } from 'jose';
import { clientAuthFields } from '@writ/testing';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, tokenRequest } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { dpopKey, type DpopKey, proof } from './support/dpop';

const SECRET = 'sk_live_dpop_9f2a';
const PAYOUT = { destination: 'acct_1', amount: 42000, currency: 'usd' };

describe('DPoP (RFC 9449): sender-constrained credentials', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let key: DpopKey;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    key = await dpopKey();
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  const tokenUrl = () => `${services.issuer}/oauth2/token`;
  const payoutsUrl = () => `${services.gatewayUrl}/connectors/payments/v1/payouts`;
  const exchange = async (taskToken: string, dpop?: string) =>
    postForm(
      tokenUrl(),
      { ...exchangeFields(taskToken, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
      dpop ? { dpop } : {},
    );
  const pay = (headers: Record<string, string>) =>
    http(payoutsUrl(), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(PAYOUT) });

  it('advertises the proof algorithms', async () => {
    const metadata = await http(`${services.issuer}/.well-known/oauth-authorization-server`);
    expect(metadata.body.dpop_signing_alg_values_supported).toEqual(expect.arrayContaining(['ES256', 'EdDSA']));
  });

  it('binds a credential to the proof key, which only that key can then use, once per proof', async () => {
    const task = await createTask(services, world.orchestrator);
    const tokenProof = await proof(key, 'POST', tokenUrl());
    const issued = await exchange(task.task_token, tokenProof);
    expect(issued.status).toBe(200);
    expect(issued.body.token_type).toBe('DPoP');
    const token: string = issued.body.access_token;
    expect(decodeJwt(token).cnf).toEqual({ jkt: key.jkt });

    // The same token-endpoint proof again: refused.
    const replayed = await exchange(task.task_token, tokenProof);
    expect(replayed.status).toBe(400);
    expect(replayed.body.error).toBe('invalid_dpop_proof');

    const before = upstream.received.length;
    const asBearer = await pay({ authorization: `Bearer ${token}` });
    expect(asBearer.status).toBe(401);
    expect(asBearer.headers.get('www-authenticate')).toMatch(/^DPoP realm="writ", error="invalid_token".*algs="ES256/);
    const noProof = await pay({ authorization: `DPoP ${token}` });
    expect(noProof.status).toBe(401);
    expect(noProof.body.error).toBe('invalid_dpop_proof');
    const thief = await dpopKey();
    const stolen = await pay({ authorization: `DPoP ${token}`, dpop: await proof(thief, 'POST', payoutsUrl(), token) });
    expect(stolen.status).toBe(401);
    expect(stolen.body.error).toBe('invalid_dpop_proof');
    const otherUrl = await pay({
      authorization: `DPoP ${token}`,
      dpop: await proof(key, 'POST', `${services.gatewayUrl}/connectors/payments/v1/refunds`, token),
    });
    expect(otherUrl.status).toBe(401);
    const noAth = await pay({ authorization: `DPoP ${token}`, dpop: await proof(key, 'POST', payoutsUrl()) });
    expect(noAth.status).toBe(401);
    expect(upstream.received.length).toBe(before);

    // Introspection shows the binding (before the one use is spent).
    const introspected = await postForm(`${services.issuer}/oauth2/introspect`, {
      token,
      ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
    });
    expect(introspected.body).toMatchObject({ token_type: 'DPoP', cnf: { jkt: key.jkt } });

    const gatewayProof = await proof(key, 'POST', payoutsUrl(), token);
    const paid = await pay({ authorization: `DPoP ${token}`, dpop: gatewayProof });
    expect(paid.status).toBe(201);
    expect(upstream.received[upstream.received.length - 1].headers.dpop).toBeUndefined();
  });

  it('refuses a gateway proof replayed with a fresh credential', async () => {
    const task = await createTask(services, world.orchestrator);
    const token = (await exchange(task.task_token, await proof(key, 'POST', tokenUrl()))).body.access_token as string;
    const gatewayProof = await proof(key, 'POST', payoutsUrl(), token);
    expect((await pay({ authorization: `DPoP ${token}`, dpop: gatewayProof })).status).toBe(201);
    const again = await pay({ authorization: `DPoP ${token}`, dpop: gatewayProof });
    expect(again.status).toBe(401);
    expect(again.body.error).toBe('invalid_dpop_proof');
  });

  it('refuses an unbound credential presented with the DPoP scheme, and DPoP on the tasks token', async () => {
    const task = await createTask(services, world.orchestrator);
    const bearer = (await exchange(task.task_token)).body.access_token as string;
    const wrongScheme = await pay({ authorization: `DPoP ${bearer}`, dpop: await proof(key, 'POST', payoutsUrl(), bearer) });
    expect(wrongScheme.status).toBe(401);
    expect(wrongScheme.body.error).toBe('invalid_token');
    const tasks = await postForm(
      tokenUrl(),
      {
        grant_type: 'client_credentials',
        scope: 'tasks',
        ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, services.issuer)),
      },
      { dpop: await proof(key, 'POST', tokenUrl()) },
    );
    expect(tasks.status).toBe(400);
    expect(tasks.body.error).toBe('invalid_request');
  });

  it('refuses two DPoP headers at the gateway, even when each holds a valid proof, and spends neither', async () => {
    const task = await createTask(services, world.orchestrator);
    const token = (await exchange(task.task_token, await proof(key, 'POST', tokenUrl()))).body.access_token as string;
    const [firstProof, secondProof] = [await proof(key, 'POST', payoutsUrl(), token), await proof(key, 'POST', payoutsUrl(), token)];
    const { hostname, port } = new URL(services.gatewayUrl);
    const body = JSON.stringify(PAYOUT);
    const before = upstream.received.length;
    const status = await new Promise<number>((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => {
        const head = [
          'POST /connectors/payments/v1/payouts HTTP/1.1',
          `Host: ${hostname}:${port}`,
          `Authorization: DPoP ${token}`,
          `DPoP: ${firstProof}`,
          `DPoP: ${secondProof}`,
          'Content-Type: application/json',
          `Content-Length: ${Buffer.byteLength(body)}`,
          'Connection: close',
        ];
        socket.write(`${head.join('\r\n')}\r\n\r\n${body}`);
      });
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (data += chunk));
      socket.on('end', () => resolve(Number(data.split(' ')[1])));
      socket.on('error', reject);
    });
    expect(status).toBe(400);
    expect(upstream.received.length).toBe(before);
    // Refused before any proof was looked at: the agent's own retry with one of them goes through.
    expect((await pay({ authorization: `DPoP ${token}`, dpop: firstProof })).status).toBe(201);
  });

  it('refuses a malformed proof at the token endpoint with invalid_dpop_proof', async () => {
    const task = await createTask(services, world.orchestrator);
    const stale = await exchange(task.task_token, await proof(key, 'POST', tokenUrl(), undefined, { iat: Math.floor(Date.now() / 1000) - 3600 }));
    expect(stale.status).toBe(400);
    expect(stale.body.error).toBe('invalid_dpop_proof');
    expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
  });
});
