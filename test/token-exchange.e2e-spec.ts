import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { clientAuthFields } from '@writ/testing';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { postForm, sendJson, tokenRequest } from './support/oauth-client';
import { seedConnector, seedOrchestrator } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

describe('token exchange (RFC 8693 + RFC 9396) against the compiled policy', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices();
    world = await seedWorld(services.runtime.pool);
  });
  afterAll(() => services.close());

  const exchange = (taskToken: string, details: unknown = PAYOUT_REQUEST, extra: Record<string, string> = {}, agent = world.agent) =>
    tokenRequest(services.issuer, agent, exchangeFields(taskToken, details, extra));

  it('issues an RFC 9068 credential narrowed to one payout, verifiable against the JWKS', async () => {
    const task = await createTask(services, world.orchestrator);
    const response = await exchange(task.task_token);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).toMatchObject({
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      authorization_details: PAYOUT_REQUEST,
    });
    expect(response.body.expires_in).toBeLessThanOrEqual(120);
    expect(response.body.expires_in).toBeGreaterThan(100);
    const jwks = createRemoteJWKSet(new URL(`${services.issuer}/oauth2/jwks`));
    const { payload, protectedHeader } = await jwtVerify(response.body.access_token, jwks, {
      issuer: services.issuer,
      audience: `${services.gatewayUrl}/connectors/payments`,
      typ: 'at+jwt',
      algorithms: ['ES256'],
    });
    expect(protectedHeader.kid).toBeDefined();
    expect(payload).toMatchObject({ sub: 'agent-1', client_id: 'agent-1', task_id: task.task_id, authorization_details: PAYOUT_REQUEST });
    expect(typeof payload.jti).toBe('string');
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(120);
  });

  it('gives a read operation the 300 s cap and never a lifetime past the task', async () => {
    const task = await createTask(services, world.orchestrator, { ttl_seconds: 30 });
    const read = [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }];
    const response = await exchange(task.task_token, read);
    expect(response.status).toBe(200);
    expect(response.body.expires_in).toBeLessThanOrEqual(30);
    const long = await createTask(services, world.orchestrator, { ttl_seconds: 3600 });
    const capped = await exchange(long.task_token, read);
    expect(capped.body.expires_in).toBeLessThanOrEqual(300);
    expect(capped.body.expires_in).toBeGreaterThan(250);
  });

  it.each([
    ['another payee', { destination: 'acct_evil', amount_max: 42000, currency: 'usd' }, /destination/],
    ['a higher amount', { destination: 'acct_1', amount_max: 90000, currency: 'usd' }, /amount_max/],
    ['a missing declared constraint', { destination: 'acct_1', currency: 'usd' }, /amount_max/],
    ['another currency', { destination: 'acct_1', amount_max: 100, currency: 'eur' }, /currency/],
  ])('refuses %s with invalid_authorization_details and the policy reasons', async (_name, constraints, reason) => {
    const task = await createTask(services, world.orchestrator);
    const response = await exchange(task.task_token, [{ type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints }]);
    expect(response.status).toBe(400);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body.error).toBe('invalid_authorization_details');
    expect(response.body.error_description).toMatch(reason);
  });

  it('refuses an action not declared, an unknown connector, two actions and two entries', async () => {
    const task = await createTask(services, world.orchestrator);
    const cases = [
      [{ type: 'connector', connector: 'payments', actions: ['payouts.refund'] }],
      [{ type: 'connector', connector: 'chat', actions: ['messages.post'] }],
      [
        {
          type: 'connector',
          connector: 'payments',
          actions: ['payouts.create', 'payouts.get'],
          constraints: { destination: 'acct_1', amount_max: 1, currency: 'usd' },
        },
      ],
      [PAYOUT_REQUEST[0], { type: 'connector', connector: 'payments', actions: ['payouts.get'] }],
    ];
    for (const details of cases) {
      const response = await exchange(task.task_token, details);
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_authorization_details');
    }
  });

  it('quarantines a task after 3 out-of-purpose requests and revokes its credentials', async () => {
    const task = await createTask(services, world.orchestrator);
    const good = await exchange(task.task_token);
    expect(good.status).toBe(200);
    const evil = [
      { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_evil', amount_max: 1, currency: 'usd' } },
    ];
    for (let attempt = 0; attempt < 3; attempt += 1) expect((await exchange(task.task_token, evil)).status).toBe(400);
    const { rows } = await services.runtime.pool.query('SELECT status, status_reason FROM tasks WHERE id = $1', [task.task_id]);
    expect(rows[0].status).toBe('revoked');
    expect(rows[0].status_reason).toMatch(/quarantine/);
    const tokens = await services.runtime.pool.query('SELECT revoked_at FROM access_tokens WHERE task_id = $1', [task.task_id]);
    expect(tokens.rows.every((row) => row.revoked_at !== null)).toBe(true);
    const after = await exchange(task.task_token);
    expect(after.body.error).toBe('invalid_grant');
  });

  // The orchestrator may declare up to 20 entries and an operation up to 32 constraints; the
  // agent may send 100 values per constraint. The policy renders one reason per declaring entry
  // and constraint: rendered in full it exhausted the WebAssembly memory, and the trap's deny
  // was not counted out of purpose, so such requests could be repeated without quarantine.
  it('counts a widened request against many declared entries out of purpose, up to quarantine', async () => {
    const names = Array.from({ length: 16 }, (_, index) => `f${index}`);
    await seedConnector(services.runtime.pool, 'ledger', [
      {
        name: 'entries.list',
        method: 'GET',
        path: '/entries',
        risk: 'read',
        constraints: Object.fromEntries(names.map((name) => [name, { in: 'query', field: name, op: 'in' }])),
      },
    ]);
    const allowed = Array.from({ length: 20 }, (_, entry) => ({
      type: 'connector',
      connector: 'ledger',
      actions: ['entries.list'],
      constraints: Object.fromEntries(names.map((name) => [name, [entry, entry + 1]])),
    }));
    const task = await createTask(services, world.orchestrator, { allowed });
    const widened = [
      {
        type: 'connector',
        connector: 'ledger',
        actions: ['entries.list'],
        constraints: Object.fromEntries(names.map((name) => [name, Array.from({ length: 100 }, (_, value) => value)])),
      },
    ];
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      const response = await exchange(task.task_token, widened);
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_authorization_details');
      expect(response.body.error_description).not.toMatch(/could not evaluate/);
      expect(response.body.error_description).toMatch(/constraint f\d+ \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(100 values\)\] is wider/);
    }
    const { rows } = await services.runtime.pool.query('SELECT status, status_reason, out_of_purpose_requests FROM tasks WHERE id = $1', [task.task_id]);
    expect(rows[0]).toMatchObject({ status: 'revoked', out_of_purpose_requests: 3 });
    expect(rows[0].status_reason).toMatch(/quarantine/);
  });

  it("refuses another agent's task, a forged task token and a token of another type", async () => {
    const task = await createTask(services, world.orchestrator);
    const stolen = await exchange(task.task_token, PAYOUT_REQUEST, {}, world.otherAgent);
    expect(stolen.status).toBe(400);
    expect(stolen.body.error).toBe('invalid_grant');

    const [header, payload, signature] = task.task_token.split('.');
    const widened = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: 'agent-2' })).toString('base64url');
    const forged = await exchange(`${header}.${widened}.${signature}`, PAYOUT_REQUEST, {}, world.otherAgent);
    expect(forged.body.error).toBe('invalid_grant');

    const tasksAccessToken = (await tokenRequest(services.issuer, world.orchestrator, { grant_type: 'client_credentials' })).body.access_token;
    const wrongType = await exchange(tasksAccessToken);
    expect(wrongType.body.error).toBe('invalid_grant');
    expect(decodeProtectedHeader(tasksAccessToken).typ).toBe('at+jwt');
  });

  it('refuses a task token signed by a foreign key with the same kid', async () => {
    const { SignJWT, generateKeyPair } = await import('jose');
    const task = await createTask(services, world.orchestrator);
    const { privateKey } = await generateKeyPair('ES256');
    const claims = JSON.parse(Buffer.from(task.task_token.split('.')[1], 'base64url').toString());
    const header = decodeProtectedHeader(task.task_token);
    const foreign = await new SignJWT(claims).setProtectedHeader(header as never).sign(privateKey);
    const response = await exchange(foreign);
    expect(response.body.error).toBe('invalid_grant');
  });

  it('refuses malformed requests with the RFC error and nothing else', async () => {
    const task = await createTask(services, world.orchestrator);
    const unknownType = await exchange(task.task_token, [{ type: 'payment_initiation', connector: 'payments', actions: ['payouts.create'] }]);
    expect(unknownType.body.error).toBe('invalid_authorization_details');
    const notJson = await exchange(task.task_token, '{not json');
    expect(notJson.body.error).toBe('invalid_authorization_details');
    const badTokenType = await tokenRequest(services.issuer, world.agent, {
      ...exchangeFields(task.task_token),
      subject_token_type: 'urn:ietf:params:oauth:token-type:saml2',
    });
    expect(badTokenType.body.error).toBe('invalid_request');
    const wrongResource = await exchange(task.task_token, PAYOUT_REQUEST, { resource: `${services.gatewayUrl}/connectors/chat` });
    expect(wrongResource.body.error).toBe('invalid_target');
    const rightResource = await exchange(task.task_token, PAYOUT_REQUEST, { resource: `${services.gatewayUrl}/connectors/payments` });
    expect(rightResource.status).toBe(200);
    const unknownGrant = await tokenRequest(services.issuer, world.agent, { grant_type: 'password' });
    expect(unknownGrant.body.error).toBe('unsupported_grant_type');
    const orchestratorExchanging = await tokenRequest(services.issuer, world.orchestrator, exchangeFields(task.task_token));
    expect(orchestratorExchanging.body.error).toBe('unauthorized_client');
    for (const response of [unknownType, notJson, badTokenType, wrongResource, unknownGrant]) {
      expect(response.status).toBe(400);
      expect(response.text).not.toMatch(/at .*\.(ts|js):\d+/);
      expect(Object.keys(response.body).sort()).toEqual(['error', 'error_description']);
    }
  });

  it('refuses a repeated parameter, a query-string parameter, a non-form body and a body over 64 KiB', async () => {
    const task = await createTask(services, world.orchestrator);
    const auth = await clientAuthFields(world.agent.id, world.agent.key, services.issuer);
    const form = new URLSearchParams({ ...exchangeFields(task.task_token), ...auth });
    form.append('authorization_details', JSON.stringify(PAYOUT_REQUEST));
    const repeated = await postForm(`${services.issuer}/oauth2/token`, form.toString());
    expect(repeated.status).toBe(400);
    expect(repeated.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/authorization_details/) });
    // Sent twice with one copy empty: a reader taking the last copy (Rails, PHP) sees no details,
    // one taking the first sees these; RFC 6749 section 3.1 forbids the repetition either way.
    for (const [first, second] of [
      ['', JSON.stringify(PAYOUT_REQUEST)],
      [JSON.stringify(PAYOUT_REQUEST), ''],
    ]) {
      const fields = { ...exchangeFields(task.task_token), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) };
      const body = new URLSearchParams({ ...fields, authorization_details: first });
      body.append('authorization_details', second);
      const emptyCopy = await postForm(`${services.issuer}/oauth2/token`, body.toString());
      expect(emptyCopy.status).toBe(400);
      expect(emptyCopy.body).toEqual({ error: 'invalid_request', error_description: 'parameter authorization_details is included more than once' });
    }

    const query = await postForm(
      `${services.issuer}/oauth2/token?grant_type=client_credentials`,
      await clientAuthFields(world.agent.id, world.agent.key, services.issuer),
    );
    expect(query.body.error).toBe('invalid_request');

    const json = await sendJson('POST', `${services.issuer}/oauth2/token`, { grant_type: 'client_credentials' });
    expect(json.status).toBe(400);
    expect(json.body.error).toBe('invalid_request');

    const huge = await postForm(`${services.issuer}/oauth2/token`, { ...exchangeFields(task.task_token), padding: 'x'.repeat(70 * 1024) });
    expect(huge.status).toBe(413);
    expect(huge.body.error).toBe('invalid_request');
    expect(huge.headers.get('cache-control')).toBe('no-store');
  });

  it('ends credentials with the task: introspection inactive, further exchanges invalid_grant, all in the audit log', async () => {
    const task = await createTask(services, world.orchestrator);
    const issued = await exchange(task.task_token);
    expect(issued.status).toBe(200);
    const introspect = async () =>
      postForm(`${services.issuer}/oauth2/introspect`, {
        token: issued.body.access_token,
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
      });
    expect((await introspect()).body).toMatchObject({ active: true, task_id: task.task_id, sub: 'agent-1' });

    const tasksApi = (await tokenRequest(services.issuer, world.orchestrator, { grant_type: 'client_credentials' })).body.access_token;
    const completed = await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/complete`, undefined, tasksApi);
    expect(completed.status).toBe(200);
    expect(completed.body.status).toBe('completed');
    expect(completed.body.grants.every((grant: { state: string }) => grant.state === 'revoked')).toBe(true);

    expect((await introspect()).body).toEqual({ active: false });
    const again = await exchange(task.task_token);
    expect(again.body).toMatchObject({ error: 'invalid_grant' });

    const { rows } = await services.runtime.pool.query('SELECT type, outcome, data FROM audit_events WHERE task_id = $1 ORDER BY seq', [task.task_id]);
    expect(rows.map((row) => `${row.type}:${row.outcome}`)).toEqual([
      'task.created:success',
      'grant.decision:success',
      'token.issued:success',
      'task.completed:success',
      'token.revoked:success',
      // The exchange asked for after the end, refused, in the task's log.
      'token.refused:denied',
    ]);
    expect(rows[5].data).toMatchObject({ error: 'invalid_grant', reason: 'task_ended' });
    expect(rows[1].data.policy_version).toMatch(/^[0-9a-f]{64}$/);
    const all = await services.runtime.pool.query('SELECT data::text AS data FROM audit_events');
    const everything = all.rows.map((row) => row.data).join('\n');
    expect(everything).not.toContain(issued.body.access_token);
    expect(everything).not.toContain(task.task_token);
  });

  it("lets an orchestrator introspect and revoke its tasks' credentials but not another's", async () => {
    const task = await createTask(services, world.orchestrator);
    const issued = (await exchange(task.task_token)).body.access_token;
    const auth = async (client = world.orchestrator) => clientAuthFields(client.id, client.key, services.issuer);
    expect((await postForm(`${services.issuer}/oauth2/introspect`, { token: issued, ...(await auth()) })).body.active).toBe(true);
    // Another agent sees nothing.
    expect((await postForm(`${services.issuer}/oauth2/introspect`, { token: issued, ...(await auth(world.otherAgent)) })).body).toEqual({ active: false });
    const revoked = await postForm(`${services.issuer}/oauth2/revoke`, { token: issued, ...(await auth()) });
    expect(revoked.status).toBe(200);
    expect((await postForm(`${services.issuer}/oauth2/introspect`, { token: issued, ...(await auth()) })).body).toEqual({ active: false });
    // Revoking garbage is still 200 (RFC 7009).
    expect((await postForm(`${services.issuer}/oauth2/revoke`, { token: 'garbage', ...(await auth()) })).status).toBe(200);
  });

  it('introspects a live task token as active for its agent and its orchestrator only, and as inactive once the task ends (RFC 7662)', async () => {
    const task = await createTask(services, world.orchestrator);
    const other = await seedOrchestrator(services.runtime.pool, 'orch-introspect', ['agent-1', 'agent-2']);
    const introspect = async (client: { id: string; key: typeof world.agent.key }) =>
      postForm(`${services.issuer}/oauth2/introspect`, { token: task.task_token, ...(await clientAuthFields(client.id, client.key, services.issuer)) });
    const claims = decodeJwt(task.task_token);
    for (const client of [world.agent, world.orchestrator]) {
      const seen = await introspect(client);
      expect(seen.headers.get('cache-control')).toBe('no-store');
      expect(seen.body).toEqual({
        active: true,
        iss: services.issuer,
        sub: world.agent.id,
        aud: services.issuer,
        client_id: world.orchestrator.id,
        iat: claims.iat,
        exp: claims.exp,
        jti: claims.jti,
        task_id: task.task_id,
      });
    }
    // Another agent, another orchestrator: nothing to see.
    for (const client of [world.otherAgent, other]) expect((await introspect(client)).body).toEqual({ active: false });
    const completed = await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/complete`, {}, await tasksToken(services, world.orchestrator));
    expect(completed.status).toBe(200);
    for (const client of [world.agent, world.orchestrator]) expect((await introspect(client)).body).toEqual({ active: false });
  });

  it('issues many concurrent credentials of one task, each recorded once with its events', async () => {
    const task = await createTask(services, world.orchestrator);
    const responses = await Promise.all(Array.from({ length: 12 }, () => exchange(task.task_token)));
    expect(responses.map((response) => response.status)).toEqual(Array(12).fill(200));
    await services.runtime.audit.drain();
    const { rows } = await services.runtime.pool.query(
      `SELECT (SELECT count(*)::int FROM access_tokens WHERE task_id = $1::uuid) AS tokens,
              (SELECT count(*)::int FROM audit_events WHERE task_id = $2 AND type = 'token.issued') AS issued`,
      [task.task_id, task.task_id],
    );
    expect(rows[0]).toEqual({ tokens: 12, issued: 12 });
    const read = await sendJson('GET', `${services.issuer}/v1/tasks/${task.task_id}`, undefined, await tasksToken(services, world.orchestrator));
    expect(read.body.history.grants_issued).toBe(12);
    expect((await services.runtime.audit.verify()).valid).toBe(true);
  });
});
