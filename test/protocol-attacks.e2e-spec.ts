import { KeyObject, randomUUID, sign } from 'node:crypto';
import { clientAssertion, clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, requireApprovalAbove, seedWorld, tasksToken, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, sendJson, tokenRequest } from './support/oauth-client';
import { seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { dpopKey, proof } from './support/dpop';

const SECRET = 'sk_live_protocol_attacks_71c';
const PAYOUT = { destination: 'acct_1', amount: 42000, currency: 'usd' };
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('protocol conformance and insider boundaries under attack', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    await seedConnector(services.runtime.pool, 'ledger', undefined, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'ledger', { type: 'bearer', token: SECRET });
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  const tokenUrl = () => `${services.issuer}/oauth2/token`;
  const payoutsUrl = () => `${services.gatewayUrl}/connectors/payments/v1/payouts`;
  const exchange = (taskToken: string, details: unknown = PAYOUT_REQUEST, extra: Record<string, string> = {}) =>
    tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, details, extra));
  const pay = (headers: Record<string, string>, url = payoutsUrl()) =>
    http(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(PAYOUT) });
  const admin = (method: string, path: string, body?: unknown, token = services.adminToken) => sendJson(method, `${services.adminUrl}${path}`, body, token);

  describe('client assertions', () => {
    const now = () => Math.floor(Date.now() / 1000);
    const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
    // jose refuses to sign a crit it does not know: sign the compact JWS by hand.
    const signedByHand = async (header: Record<string, unknown>) => {
      const input = `${b64(header)}.${b64({ iss: 'orch-1', sub: 'orch-1', aud: services.issuer, iat: now(), exp: now() + 60, jti: randomUUID() })}`;
      const signature = sign('sha256', Buffer.from(input), { key: KeyObject.from(world.orchestrator.key.privateKey), dsaEncoding: 'ieee-p1363' });
      return `${input}.${signature.toString('base64url')}`;
    };
    const clientCredentials = (assertion: string) =>
      postForm(tokenUrl(), { grant_type: 'client_credentials', scope: 'tasks', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion });

    it.each<[string, () => Promise<string>]>([
      ['crit naming an unknown extension', () => signedByHand({ alg: 'ES256', kid: world.orchestrator.key.publicJwk.kid, crit: ['exp-ext'], 'exp-ext': 1 })],
      ['an x5c header', () => clientAssertion('orch-1', world.orchestrator.key, services.issuer, { header: { x5c: ['MIIB'] } })],
      [
        'an audience array holding the issuer and another',
        () => clientAssertion('orch-1', world.orchestrator.key, services.issuer, { claims: { aud: [services.issuer, 'https://rs.example'] } }),
      ],
      ['typ dpop+jwt', () => clientAssertion('orch-1', world.orchestrator.key, services.issuer, { header: { typ: 'dpop+jwt' } })],
      // Another client's key named by kid, signed with that key: not the claimed client's key.
      ['the kid and key of another client', () => clientAssertion('orch-1', world.agent.key, services.issuer)],
    ])('refuses %s', async (_name, make) => {
      const response = await clientCredentials(await make());
      expect(response.status).toBe(401);
      expect(response.body.error).toBe('invalid_client');
    });

    it('spends a jti once when the same assertion is fired in parallel', async () => {
      const assertion = await clientAssertion('orch-1', world.orchestrator.key, services.issuer);
      const answers = await Promise.all(Array.from({ length: 8 }, () => clientCredentials(assertion)));
      expect(answers.filter((answer) => answer.status === 200)).toHaveLength(1);
      expect(answers.filter((answer) => answer.body.error === 'invalid_client')).toHaveLength(7);
    });
  });

  describe('client_credentials targets', () => {
    it.each<[string, Record<string, string>, string]>([
      ['an audience', { audience: 'https://rs.example/api' }, 'invalid_target'],
      ['a resource', { resource: 'https://rs.example/api' }, 'invalid_target'],
      ['authorization_details', { authorization_details: JSON.stringify(PAYOUT_REQUEST) }, 'invalid_authorization_details'],
    ])('refuses %s instead of ignoring it', async (_name, extra, error) => {
      const response = await tokenRequest(services.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks', ...extra });
      expect(response.status).toBe(400);
      expect(response.body.error).toBe(error);
    });
  });

  describe('Tasks API authentication', () => {
    it('reads the Bearer scheme case-insensitively (RFC 7235 section 2.1), as the gateway does', async () => {
      const task = await createTask(services, world.orchestrator);
      const tasks = await tasksToken(services, world.orchestrator);
      for (const scheme of ['bearer', 'BEARER']) {
        const response = await http(`${services.issuer}/v1/tasks/${task.task_id}`, { headers: { authorization: `${scheme} ${tasks}` } });
        expect(response.status).toBe(200);
      }
    });
  });

  describe('token type confusion', () => {
    it('takes only a task token as subject_token', async () => {
      const task = await createTask(services, world.orchestrator);
      const credential = (await exchange(task.task_token)).body.access_token as string;
      const tasks = await tasksToken(services, world.orchestrator);
      const assertion = await clientAssertion('agent-1', world.agent.key, services.issuer);
      const dpop = await proof(await dpopKey(), 'POST', tokenUrl());
      for (const subject of [credential, tasks, assertion, dpop]) {
        const response = await exchange(subject);
        expect(response.status).toBe(400);
        expect(response.body.error).toBe('invalid_grant');
      }
    });

    it('keeps each token to its audience: task token, tasks token and connector credential', async () => {
      const task = await createTask(services, world.orchestrator);
      const credential = (await exchange(task.task_token)).body.access_token as string;
      const tasks = await tasksToken(services, world.orchestrator);
      for (const bearer of [task.task_token, tasks]) expect((await pay({ authorization: `Bearer ${bearer}` })).status).toBe(401);
      const elsewhere = await pay({ authorization: `Bearer ${credential}` }, `${services.gatewayUrl}/connectors/ledger/v1/payouts`);
      expect(elsewhere.status).toBe(401);
      for (const bearer of [task.task_token, credential]) {
        expect((await sendJson('GET', `${services.issuer}/v1/tasks/${task.task_id}`, undefined, bearer)).status).toBe(401);
      }
    });
  });

  describe('authorization_details locations (RFC 9396 section 2.2)', () => {
    it('never lets locations name anything but the connector the credential is for', async () => {
      const tasks = await tasksToken(services, world.orchestrator);
      const declared = await sendJson(
        'POST',
        `${services.issuer}/v1/tasks`,
        {
          agent_id: 'agent-1',
          purpose: 'locations',
          ttl_seconds: 600,
          allowed: [{ ...PAYOUT_ALLOWED[0], locations: ['https://elsewhere.example/api'] }],
        },
        tasks,
      );
      expect(declared.status).toBe(400);
      expect(declared.body.fields).toEqual([expect.objectContaining({ field: 'allowed[0].locations[0]' })]);
      const own = `${services.gatewayUrl}/connectors/payments`;
      const task = await createTask(services, world.orchestrator, { allowed: [{ ...PAYOUT_ALLOWED[0], locations: [own] }] });
      const asked = await exchange(task.task_token, [{ ...PAYOUT_REQUEST[0], locations: ['https://elsewhere.example/api'] }]);
      expect(asked.status).toBe(400);
      expect(asked.body).toEqual({
        error: 'invalid_authorization_details',
        error_description: 'authorization_details[0].locations[0] must be the URL of the connector',
      });
      expect((await exchange(task.task_token, [{ ...PAYOUT_REQUEST[0], locations: [own] }])).status).toBe(200);
      expect((await exchange(task.task_token, PAYOUT_REQUEST)).status).toBe(200);
    });
  });

  describe('DPoP', () => {
    it.each<[string, (url: string) => [string, string]]>([
      ['an htu with a trailing slash', (url) => ['POST', `${url}/`]],
      ['an htu with another path case', (url) => ['POST', url.replace('/oauth2/token', '/OAuth2/token')]],
      ['an htu on another port', (url) => ['POST', url.replace(/:(\d+)\//, (_m, port: string) => `:${Number(port) + 1}/`)]],
      ['a lower-case htm', (url) => ['post', url]],
    ])('refuses at the token endpoint a proof with %s', async (_name, bend) => {
      const task = await createTask(services, world.orchestrator);
      const [method, url] = bend(tokenUrl());
      const response = await postForm(
        tokenUrl(),
        { ...exchangeFields(task.task_token, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
        { dpop: await proof(await dpopKey(), method, url) },
      );
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_dpop_proof');
    });

    it('accepts a proof whose htu differs only by a query or a fragment (RFC 9449 section 4.3)', async () => {
      const key = await dpopKey();
      for (const url of [`${tokenUrl()}?x=1`, `${tokenUrl()}#f`]) {
        const task = await createTask(services, world.orchestrator);
        const response = await postForm(
          tokenUrl(),
          { ...exchangeFields(task.task_token, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
          { dpop: await proof(key, 'POST', url) },
        );
        expect(response.status).toBe(200);
      }
    });

    it('forwards a gateway proof fired in parallel exactly once, and refuses a wrong ath', async () => {
      const key = await dpopKey();
      const task = await createTask(services, world.orchestrator);
      const issued = await postForm(
        tokenUrl(),
        { ...exchangeFields(task.task_token, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
        { dpop: await proof(key, 'POST', tokenUrl()) },
      );
      const token = issued.body.access_token as string;
      const wrongAth = await pay({ authorization: `DPoP ${token}`, dpop: await proof(key, 'POST', payoutsUrl(), undefined, { ath: 'A'.repeat(43) }) });
      expect(wrongAth.status).toBe(401);
      const gatewayProof = await proof(key, 'POST', payoutsUrl(), token);
      const before = upstream.received.length;
      const answers = await Promise.all(Array.from({ length: 6 }, () => pay({ authorization: `DPoP ${token}`, dpop: gatewayProof })));
      expect(answers.filter((answer) => answer.status === 201)).toHaveLength(1);
      expect(upstream.received.length - before).toBe(1);
    });
  });

  describe('introspection and revocation between clients', () => {
    it("shows another client's or another task's token as inactive and never revokes it", async () => {
      const task = await createTask(services, world.orchestrator);
      const credential = (await exchange(task.task_token)).body.access_token as string;
      const other = await seedOrchestrator(services.runtime.pool, 'orch-probe', ['agent-1', 'agent-2']);
      for (const endpoint of ['introspect', 'revoke']) {
        const unauthenticated = await postForm(`${services.issuer}/oauth2/${endpoint}`, { token: credential });
        expect(unauthenticated.status).toBe(401);
        expect(unauthenticated.body.error).toBe('invalid_client');
      }
      for (const client of [world.otherAgent, other]) {
        const auth = () => clientAuthFields(client.id, client.key, services.issuer);
        const seen = await postForm(`${services.issuer}/oauth2/introspect`, { token: credential, ...(await auth()) });
        expect(seen.body).toEqual({ active: false });
        const revoked = await postForm(`${services.issuer}/oauth2/revoke`, { token: credential, token_type_hint: 'refresh_token', ...(await auth()) });
        expect(revoked.status).toBe(200);
        const taskRevoked = await postForm(`${services.issuer}/oauth2/revoke`, { token: task.task_token, ...(await auth()) });
        expect(taskRevoked.status).toBe(200);
      }
      const own = await postForm(`${services.issuer}/oauth2/introspect`, {
        token: credential,
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
      });
      expect(own.body.active).toBe(true);
      const hinted = await postForm(`${services.issuer}/oauth2/revoke`, {
        token: credential,
        token_type_hint: 'refresh_token',
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
      });
      expect(hinted.status).toBe(200);
      const after = await postForm(`${services.issuer}/oauth2/introspect`, {
        token: credential,
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
      });
      expect(after.body).toEqual({ active: false });
    });
  });

  describe('approvals', () => {
    beforeAll(async () => {
      await requireApprovalAbove(services, 10000);
    });

    it('lets exactly one of two parallel approvals win', async () => {
      const task = await createTask(services, world.orchestrator);
      const pending = await exchange(task.task_token);
      const id: string = pending.body.approval_id;
      const answers = await Promise.all([admin('POST', `/v1/approvals/${id}/approve`, {}), admin('POST', `/v1/approvals/${id}/approve`, {})]);
      expect(answers.map((answer) => answer.status).sort()).toEqual([200, 409]);
    });

    it.each(['complete', 'fail'])('expires the approvals of a task the orchestrator ended (%s): none can be decided', async (end) => {
      const task = await createTask(services, world.orchestrator);
      const pending = await exchange(task.task_token);
      const id: string = pending.body.approval_id;
      const tasks = await tasksToken(services, world.orchestrator);
      expect((await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/${end}`, undefined, tasks)).status).toBe(200);
      for (const decision of ['approve', 'deny']) {
        const decided = await admin('POST', `/v1/approvals/${id}/${decision}`, {});
        expect(decided.status).toBe(409);
        expect(decided.body.message).toBe(`approval ${id} is expired, not pending`);
      }
      expect((await admin('GET', `/v1/approvals/${id}`)).body).toMatchObject({ status: 'expired', decided_at: null });
      const queue = await admin('GET', `/v1/approvals?status=pending&task_id=${task.task_id}`);
      expect(queue.body.items).toEqual([]);
      const expired = await admin('GET', `/v1/approvals?status=expired&task_id=${task.task_id}`);
      expect(expired.body.items.map((item: { id: string }) => item.id)).toEqual([id]);
    });

    it('keeps an approval approved before its task ended from buying anything', async () => {
      const task = await createTask(services, world.orchestrator);
      const id: string = (await exchange(task.task_token)).body.approval_id;
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      const tasks = await tasksToken(services, world.orchestrator);
      expect((await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/complete`, undefined, tasks)).status).toBe(200);
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('expired');
      const used = await exchange(task.task_token, PAYOUT_REQUEST, { approval_id: id });
      expect(used.body.error).toBe('invalid_grant');
    });
  });

  describe('admin roles', () => {
    it('refuses a viewer every route that changes something', async () => {
      const created = await admin('POST', '/v1/admin-tokens', { name: 'probe-viewer', role: 'viewer' });
      const viewer: string = created.body.token;
      const docs = await http(`${services.adminUrl}/docs-json`);
      const routes = Object.entries(docs.body.paths as Record<string, Record<string, unknown>>).flatMap(([path, methods]) =>
        Object.keys(methods)
          .filter((method) => !['get', 'head', 'parameters'].includes(method))
          .map((method) => [method.toUpperCase(), path.replace(/\{[^}]+\}/g, 'x')] as const),
      );
      expect(routes.length).toBeGreaterThan(15);
      const allowed = new Set(['POST /v1/audit/hash']);
      for (const [method, path] of routes) {
        if (allowed.has(`${method} ${path}`)) continue;
        // The policy upload takes a bundle, not JSON (a JSON body is a 415 before the role is checked).
        const answer =
          path === '/v1/policies/active' && method === 'PUT'
            ? await http(`${services.adminUrl}${path}`, {
                method,
                headers: { authorization: `Bearer ${viewer}`, 'content-type': 'application/octet-stream' },
                body: Buffer.from('not a bundle'),
              })
            : await admin(method, path, method === 'DELETE' ? undefined : {}, viewer);
        expect(`${method} ${path} ${answer.status}`).toBe(`${method} ${path} 403`);
      }
    });
  });
});
