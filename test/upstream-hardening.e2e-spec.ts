import { Client } from 'pg';
import { legacyCredentialSealContext } from '@writ/connectors';
import { tagConnectorRow } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { CredentialBinding } from '../apps/connector-gateway/src/upstream/credential-binding.service';
import { createTask, exchangeFields, seedClients, World } from './support/grant-flow';
import { ChatUpstream, MockUpstream, startChatUpstream, startCodeHostUpstream, startMockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const PAYMENTS_SECRET = 'sk_live_bound_to_payments_6d1e';
const CODE_SECRET = 'glpat-bound-code-host-8a2f';
const CHAT_SECRET = 'chat-bound-client-secret-3c9b';

/**
 * Issue 8, upstream hardening: credentials bound to their destination, the networks the
 * gateway may reach, the headers it forwards, catalogue changes against live credentials,
 * and numbers checked exactly as forwarded. Every attack checks that nothing reached the
 * upstream (or the attacker's host).
 */
describe('upstream hardening', () => {
  let services: TestServices;
  /** A second instance over the same database whose configuration allows no loopback upstream. */
  let strict: TestServices;
  let world: World;
  let payments: MockUpstream;
  let attacker: MockUpstream;
  let code: MockUpstream;
  let chat: ChatUpstream;

  const admin = (method: string, path: string, body?: unknown, on: TestServices = services) => sendJson(method, `${on.adminUrl}${path}`, body, on.adminToken);
  const portOf = (upstream: MockUpstream) => new URL(upstream.url).port;
  const strictGateway = () => `http://127.0.0.1:${strict.apps[1].getHttpServer().address().port as number}`;

  const BOUNDED_OPERATIONS = [
    {
      ...PAYMENTS_OPERATIONS[0],
      constraints: { ...PAYMENTS_OPERATIONS[0].constraints, amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 1000000 } },
    },
    ...PAYMENTS_OPERATIONS.slice(1),
    { name: 'balance.get', method: 'GET', path: '/v1/balance', risk: 'read', constraints: {} },
  ];
  const connector = (id: string, baseUrl: string, extra: Record<string, unknown> = {}) => ({
    id,
    name: id,
    base_url: baseUrl,
    credential: { type: 'bearer', token: PAYMENTS_SECRET },
    operations: BOUNDED_OPERATIONS,
    ...extra,
  });
  const register = async (body: Record<string, unknown>, on: TestServices = services) => {
    const response = await admin('POST', '/v1/connectors', body, on);
    if (response.status !== 201) throw new Error(`registration failed: ${response.text}`);
  };

  const allowedFor = (id: string) => [
    { type: 'connector', connector: id, actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' } },
    { type: 'connector', connector: id, actions: ['payouts.get', 'balance.get'] },
  ];
  async function credential(id: string, details: Record<string, unknown>): Promise<string> {
    const task = await createTask(services, world.orchestrator, { allowed: allowedFor(id) });
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [{ type: 'connector', connector: id, ...details }]));
    if (response.status !== 200) throw new Error(`exchange failed: ${response.text}`);
    return response.body.access_token;
  }
  const payoutCredential = (id: string, amountMax = 30000) =>
    credential(id, { actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: amountMax, currency: 'usd' } });
  const balanceCredential = (id: string) => credential(id, { actions: ['balance.get'] });

  const call = (method: string, url: string, token: string, body?: string, headers: Record<string, string> = {}): Promise<TestResponse> =>
    http(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body,
    });
  const gateway = (method: string, path: string, token: string, body?: string, headers?: Record<string, string>) =>
    call(method, `${services.gatewayUrl}${path}`, token, body, headers);

  beforeAll(async () => {
    payments = await startPaymentsUpstream(PAYMENTS_SECRET);
    attacker = await startMockUpstream(() => true, {});
    code = await startCodeHostUpstream(CODE_SECRET);
    chat = await startChatUpstream('writ-gateway', CHAT_SECRET);
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    strict = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
      db: services.db,
      env: { WRIT_ISSUER: services.issuer, WRIT_GATEWAY_URL: services.gatewayUrl, WRIT_UPSTREAM_ALLOWED_NETWORKS: '' },
    });
    world = await seedClients(services.runtime.pool);
  });

  afterAll(async () => {
    await strict.close();
    await services.close();
    for (const upstream of [payments, attacker, code, chat]) await upstream.close();
  });

  describe('credentials bound to their destination', () => {
    it('refuses a base_url change without the credential: the new host receives nothing', async () => {
      await register(connector('moving', payments.url));
      const before = (await admin('GET', '/v1/connectors/moving')).body;
      const moved = await admin('PATCH', '/v1/connectors/moving', { base_url: attacker.url });
      expect(moved.status).toBe(400);
      expect(moved.body).toMatchObject({
        error: 'invalid_request',
        fields: [{ field: 'credential', message: expect.stringMatching(/requires the credential again/) }],
      });
      expect((await admin('GET', '/v1/connectors/moving')).body).toEqual(before);
      const token = await balanceCredential('moving');
      expect((await gateway('GET', '/connectors/moving/v1/balance', token)).status).toBe(200);
      expect(attacker.received).toHaveLength(0);
    });

    it('clears the credential with "credential": null; calls then fail closed and send nothing', async () => {
      await register(connector('cleared', payments.url));
      const cleared = await admin('PATCH', '/v1/connectors/cleared', { base_url: attacker.url, credential: null });
      expect(cleared.status).toBe(200);
      expect(cleared.body).toMatchObject({ base_url: attacker.url, credential: null });
      const token = await balanceCredential('cleared');
      const response = await gateway('GET', '/connectors/cleared/v1/balance', token);
      expect(response.status).toBe(502);
      expect(response.body).toEqual({ error: 'bad_gateway', error_description: 'connector cleared has no upstream credential: nothing was sent' });
      expect(attacker.received).toHaveLength(0);
      const events = await services.runtime.pool.query(
        `SELECT type, actor_type FROM audit_events WHERE connector_id = 'cleared' AND type LIKE 'admin.%' ORDER BY seq`,
      );
      expect(events.rows.map((row) => row.type)).toEqual(['admin.connector.created', 'admin.connector.updated', 'admin.connector.credential_removed']);
      // A new credential given with the move is sealed for the new destination.
      const back = await admin('PATCH', '/v1/connectors/cleared', { base_url: payments.url, credential: { type: 'bearer', token: PAYMENTS_SECRET } });
      expect(back.status).toBe(200);
      expect((await gateway('GET', '/connectors/cleared/v1/balance', token)).status).toBe(200);
    });

    it('refuses a credential whose base_url was edited in SQL by a superuser: nothing reaches the new host', async () => {
      await register(connector('edited', payments.url));
      const token = await balanceCredential('edited');
      expect((await gateway('GET', '/connectors/edited/v1/balance', token)).status).toBe(200);
      const superuser = new Client({ connectionString: services.db.url });
      await superuser.connect();
      try {
        await superuser.query(`UPDATE connectors SET base_url = $1 WHERE id = 'edited'`, [`http://localhost:${portOf(attacker)}`]);
        // The row's integrity tag no longer verifies: the connector stands as removed.
        const untagged = await gateway('GET', '/connectors/edited/v1/balance', token);
        expect(untagged.status).toBe(401);
        expect(attacker.received).toHaveLength(0);
        // Even with a valid tag (as if the superuser had one), the sealed credential is bound to the old base_url.
        await tagConnectorRow(services.runtime.pool, services.runtime.rowIntegrity, 'edited');
        const response = await gateway('GET', '/connectors/edited/v1/balance', token);
        expect(response.status).toBe(502);
        expect(response.body.error).toBe('bad_gateway');
        expect(response.body.error_description).toMatch(/not bound to its current base_url.*nothing was sent/);
        expect(attacker.received).toHaveLength(0);
        // Copying another connector's sealed credential does not help either.
        await register(connector('donor', attacker.url, { credential: { type: 'bearer', token: 'sk_donor_value_1234' } }));
        await superuser.query(
          `UPDATE connectors SET (credential_type, credential_sealed, credential_fingerprint) =
             (SELECT credential_type, credential_sealed, credential_fingerprint FROM connectors WHERE id = 'moving') WHERE id = 'donor'`,
        );
        const donorToken = await balanceCredential('donor');
        expect((await gateway('GET', '/connectors/donor/v1/balance', donorToken)).status).toBe(502);
        expect(attacker.received).toHaveLength(0);
        const refusals = await services.runtime.pool.query(
          `SELECT data FROM audit_events WHERE connector_id = 'edited' AND type = 'gateway.call' AND outcome = 'failure' ORDER BY seq`,
        );
        expect(refusals.rows.map((row) => [row.data.status, row.data.reason])).toEqual([[502, 'upstream_credential_unbound']]);
      } finally {
        await superuser.end();
      }
    });

    it('binds a credential sealed before destination binding to its base_url at start, once', async () => {
      await register(connector('legacy', payments.url, { credential: undefined }));
      const plaintext = JSON.stringify({ type: 'bearer', token: PAYMENTS_SECRET });
      const { masterKey, pool } = services.runtime;
      await pool.query(
        `UPDATE connectors SET credential_type = 'bearer', credential_sealed = $2, credential_fingerprint = $3, credential_set_at = now() WHERE id = $1`,
        ['legacy', masterKey.seal(plaintext, legacyCredentialSealContext('legacy')), masterKey.fingerprint(plaintext)],
      );
      // As the upgrade's backfill tagged it (the legacy row predates connector tags).
      await tagConnectorRow(pool, services.runtime.rowIntegrity, 'legacy');
      const token = await balanceCredential('legacy');
      // Until bound, the gateway does not send it.
      expect((await gateway('GET', '/connectors/legacy/v1/balance', token)).status).toBe(502);
      const binding = services.apps[1].get(CredentialBinding);
      const report = await binding.bindLegacyCredentials();
      expect(report.rebound).toEqual(['legacy']);
      expect(report.unbound).toEqual(expect.arrayContaining(['donor', 'edited']));
      expect((await binding.bindLegacyCredentials()).rebound).toEqual([]);
      expect((await gateway('GET', '/connectors/legacy/v1/balance', token)).status).toBe(200);
      const events = await pool.query(`SELECT actor_type, data FROM audit_events WHERE connector_id = 'legacy' AND type = 'connector.credential_rebound'`);
      expect(events.rows).toEqual([{ actor_type: 'system', data: { origin: payments.url, fingerprint: masterKey.fingerprint(plaintext) } }]);
    });
  });

  describe('upstream destinations', () => {
    it.each([
      ['a metadata address', 'http://169.254.169.254/latest/meta-data/'],
      ['an IPv4-mapped metadata address', 'http://[::ffff:169.254.169.254]/'],
      ['a decimal IPv4 metadata address', 'http://2852039166/'],
      ['an octal IPv4 metadata address', 'http://0251.0376.0251.0376/'],
      ['a hexadecimal IPv4 metadata address', 'http://0xa9.0xfe.0xa9.0xfe/'],
      ['the metadata host name', 'http://metadata.google.internal/computeMetadata/v1/'],
      ['the unspecified IPv4 address', 'http://0.0.0.0:8080/'],
      ['the unspecified IPv6 address', 'http://[::]/'],
      ['an IPv6 link-local address', 'http://[fe80::1]/'],
      ['a private address not allowed', 'http://10.0.0.1/'],
      ['a shared address not allowed', 'http://100.64.0.1/'],
      ['IPv6 loopback (only 127.0.0.0/8 is allowed)', 'http://[::1]:8080/'],
      ['a unique-local IPv6 address', 'http://[fd00::1]/'],
    ])('refuses a base_url at %s, naming the field', async (_name, baseUrl) => {
      const response = await admin('POST', '/v1/connectors', connector('nowhere', baseUrl));
      expect(response.status).toBe(400);
      // An address not written as the URL parser reads it (0xa9.0xfe.0xa9.0xfe) is refused first, naming the address it is.
      expect(response.body.fields).toEqual([
        {
          field: 'base_url',
          message: expect.stringMatching(
            /^must not point at this destination|^must name its host as it is reached \((169\.254\.169\.254|\[::ffff:a9fe:a9fe\])\)$/,
          ),
        },
      ]);
      const moved = await admin('PATCH', '/v1/connectors/moving', { base_url: baseUrl, credential: { type: 'bearer', token: PAYMENTS_SECRET } });
      expect(moved.status).toBe(400);
      expect(moved.body.fields.map((field: { field: string }) => field.field)).toEqual(['base_url']);
    });

    it('refuses an oauth2 token_url at a metadata address, and loopback where it is not allowed', async () => {
      const oauth = (tokenUrl: string) => ({ type: 'oauth2_client_credentials', token_url: tokenUrl, client_id: 'writ', client_secret: CHAT_SECRET });
      const metadata = await admin('POST', '/v1/connectors', connector('tokens', payments.url, { credential: oauth('http://[::ffff:a9fe:a9fe]/token') }));
      expect(metadata.body.fields).toEqual([{ field: 'credential.token_url', message: expect.stringMatching(/never reachable/) }]);
      const loopback = await admin(
        'POST',
        '/v1/connectors',
        connector('tokens', 'https://api.payments.example', { credential: oauth(`${chat.url}/oauth/token`) }),
        strict,
      );
      expect(loopback.body.fields).toEqual([{ field: 'credential.token_url', message: expect.stringMatching(/outside WRIT_UPSTREAM_ALLOWED_NETWORKS/) }]);
    });

    it('refuses a host name that resolves to loopback where loopback is not allowed', async () => {
      const response = await admin('POST', '/v1/connectors', connector('named', `http://localhost:${portOf(payments)}`), strict);
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'base_url', message: expect.stringMatching(/localhost resolves to 127\.0\.0\.1 .*outside/) }]);
      expect((await admin('POST', '/v1/connectors', connector('named', `http://127.0.0.1:${portOf(payments)}`), strict)).status).toBe(400);
    });

    it('refuses at connect time, on the resolved address, a host registered while it was allowed: nothing reaches the upstream', async () => {
      await register(connector('by-name', `http://localhost:${portOf(payments)}`));
      const token = await balanceCredential('by-name');
      expect((await gateway('GET', '/connectors/by-name/v1/balance', token)).status).toBe(200);
      const before = payments.received.length;
      // The strict instance (no loopback allowed) shares the database and the signing keys.
      const response = await call('GET', `${strictGateway()}/connectors/by-name/v1/balance`, token);
      expect(response.status).toBe(502);
      expect(response.body).toEqual({
        error: 'bad_gateway',
        error_description: 'the upstream address is not reachable from the gateway (WRIT_UPSTREAM_ALLOWED_NETWORKS): nothing was sent',
      });
      expect(payments.received.length).toBe(before);
    });

    it('refuses an address literal before spending anything, and an oauth2 token endpoint, on the strict instance', async () => {
      // Written as the URL parser reads it ([::ffff:127.0.0.1] is refused at registration for that).
      await register(connector('literal', `http://[::ffff:7f00:1]:${portOf(payments)}`));
      const token = await payoutCredential('literal');
      const before = payments.received.length;
      const body = JSON.stringify({ destination: 'acct_1', amount: 100, currency: 'usd' });
      const refused = await call('POST', `${strictGateway()}/connectors/literal/v1/payouts`, token, body);
      expect(refused.status).toBe(502);
      expect(refused.body.error_description).toMatch(/127\.0\.0\.1 is a loopback or private address outside WRIT_UPSTREAM_ALLOWED_NETWORKS/);
      expect(payments.received.length).toBe(before);
      // Nothing was spent: the same one-use credential still works where loopback is allowed.
      expect((await gateway('POST', '/connectors/literal/v1/payouts', token, body)).status).toBe(201);

      await register({
        id: 'chat',
        name: 'Chat',
        base_url: 'https://chat.example',
        credential: {
          type: 'oauth2_client_credentials',
          token_url: `http://localhost:${portOf(chat)}/oauth/token`,
          client_id: 'writ-gateway',
          client_secret: CHAT_SECRET,
        },
        operations: [{ name: 'messages.post', method: 'POST', path: '/api/messages', risk: 'write', constraints: {} }],
      });
      const task = await createTask(services, world.orchestrator, { allowed: [{ type: 'connector', connector: 'chat', actions: ['messages.post'] }] });
      const issued = await tokenRequest(
        services.issuer,
        world.agent,
        exchangeFields(task.task_token, [{ type: 'connector', connector: 'chat', actions: ['messages.post'] }]),
      );
      const response = await call('POST', `${strictGateway()}/connectors/chat/api/messages`, issued.body.access_token, '{"text":"hi"}');
      expect(response.status).toBe(502);
      expect(response.body.error_description).toMatch(/token endpoint is not reachable/);
      expect(chat.received).toHaveLength(0);
    });
  });

  describe('headers upstream', () => {
    it('never forwards routing or client-IP headers', async () => {
      const token = await balanceCredential('moving');
      const headers = {
        'x-original-url': '/admin/delete-everything',
        'x-rewrite-url': '/admin',
        'x-forwarded-host': 'internal.example',
        'x-forwarded-prefix': '/admin',
        'x-forwarded-proto': 'https',
        forwarded: 'for=127.0.0.1;host=internal',
        'true-client-ip': '127.0.0.1',
        'x-client-ip': '127.0.0.1',
        'x-real-ip': '127.0.0.1',
        'x-trace': 'kept',
      };
      expect((await gateway('GET', '/connectors/moving/v1/balance', token, undefined, headers)).status).toBe(200);
      const forwarded = payments.received[payments.received.length - 1].headers;
      for (const name of Object.keys(headers).filter((name) => name !== 'x-trace')) expect(forwarded[name]).toBeUndefined();
      expect(forwarded['x-trace']).toBe('kept');
    });

    it.each([
      'Content-Type',
      'Content-Length',
      'Host',
      'Transfer-Encoding',
      'Connection',
      'Cookie',
      'Keep-Alive',
      'Upgrade',
      'X-HTTP-Method-Override',
      'X-Forwarded-For',
      'X-Original-URL',
    ])('refuses a header credential named %s', async (name) => {
      const response = await admin(
        'POST',
        '/v1/connectors',
        connector('headers', payments.url, { credential: { type: 'header', name, value: 'secret-value' } }),
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'credential.name', message: expect.stringMatching(/controls or drops/) }]);
    });
  });

  describe('catalogue changes and live credentials', () => {
    it("revokes the credentials of a changed operation in the change's transaction, with the admin as actor", async () => {
      await register(connector('changing', payments.url));
      const payout = await payoutCredential('changing');
      const read = await balanceCredential('changing');
      const before = payments.received.length;
      const changed = BOUNDED_OPERATIONS.map((operation, index) =>
        index === 0
          ? { ...operation, constraints: { ...operation.constraints, amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 100 } } }
          : operation,
      );
      const patched = await admin('PATCH', '/v1/connectors/changing', { operations: changed });
      expect(patched.status).toBe(200);
      const response = await gateway('POST', '/connectors/changing/v1/payouts', payout, JSON.stringify({ destination: 'acct_1', amount: 50, currency: 'usd' }));
      expect(response.status).toBe(401);
      expect(response.body.error_description).toBe('the access token has been revoked');
      expect(payments.received.length).toBe(before);
      // An operation whose rules did not change keeps its credentials.
      expect((await gateway('GET', '/connectors/changing/v1/balance', read)).status).toBe(200);
      const events = await services.runtime.pool.query(
        `SELECT type, actor_type, actor_id, data FROM audit_events WHERE connector_id = 'changing' AND type IN ('admin.connector.updated', 'token.revoked') ORDER BY seq`,
      );
      expect(events.rows).toEqual([
        { type: 'admin.connector.updated', actor_type: 'admin', actor_id: expect.any(String), data: expect.objectContaining({ changed: ['operations'] }) },
        {
          type: 'token.revoked',
          actor_type: 'admin',
          actor_id: events.rows[0].actor_id,
          data: { reason: 'connector operation changed', jtis: [expect.any(String)], count: 1 },
        },
      ]);
      // Removing an operation revokes its credentials too.
      const another = await balanceCredential('changing');
      expect((await admin('PATCH', '/v1/connectors/changing', { operations: changed.slice(0, 3) })).status).toBe(200);
      expect((await gateway('GET', '/connectors/changing/v1/balance', another)).status).toBe(401);
    });
    it('refuses to issue a grant beyond a bound the catalogue set after the task was declared', async () => {
      await register(connector('bounded', payments.url));
      const task = await createTask(services, world.orchestrator, { allowed: allowedFor('bounded') });
      const lowered = BOUNDED_OPERATIONS.map((operation, index) =>
        index === 0
          ? { ...operation, constraints: { ...operation.constraints, amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 100 } } }
          : operation,
      );
      expect((await admin('PATCH', '/v1/connectors/bounded', { operations: lowered })).status).toBe(200);
      const detail = {
        type: 'connector',
        connector: 'bounded',
        actions: ['payouts.create'],
        constraints: { destination: 'acct_1', amount_max: 30000, currency: 'usd' },
      };
      const refused = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [detail]));
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('invalid_authorization_details');
      expect(refused.body.error_description).toMatch(
        /constraint amount_max \(lte 30000\) admits values outside the catalogue's bounds of payouts.create: 0 to 100/,
      );
      const inside = await tokenRequest(
        services.issuer,
        world.agent,
        exchangeFields(task.task_token, [{ ...detail, constraints: { ...detail.constraints, amount_max: 100 } }]),
      );
      expect(inside.status).toBe(200);
    });

    it('never leaves a live credential decided on an operation a concurrent PATCH changed', async () => {
      await register(connector('racing', payments.url));
      const tasks = await Promise.all(Array.from({ length: 6 }, () => createTask(services, world.orchestrator, { allowed: allowedFor('racing') })));
      const detail = {
        type: 'connector',
        connector: 'racing',
        actions: ['payouts.create'],
        constraints: { destination: 'acct_1', amount_max: 30000, currency: 'usd' },
      };
      // Warm the catalogue cache with the old definition, as a busy token endpoint would have it.
      expect((await tokenRequest(services.issuer, world.agent, exchangeFields(tasks[0].task_token, [detail]))).status).toBe(200);
      // The new definition bounds amount_max below every grant asked for: after the PATCH no
      // such credential may be live, whether issued before it (revoked) or after (refused).
      const lowered = BOUNDED_OPERATIONS.map((operation, index) =>
        index === 0
          ? { ...operation, constraints: { ...operation.constraints, amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 100 } } }
          : operation,
      );
      const exchanges = Array.from({ length: 24 }, (_, index) =>
        tokenRequest(services.issuer, world.agent, exchangeFields(tasks[index % tasks.length].task_token, [detail])),
      );
      const [patched, ...answers] = await Promise.all([admin('PATCH', '/v1/connectors/racing', { operations: lowered }), ...exchanges]);
      expect(patched.status).toBe(200);
      for (const answer of answers) expect([200, 400]).toContain(answer.status);
      const live = await services.runtime.pool.query<{ jti: string }>(
        `SELECT jti FROM access_tokens WHERE connector_id = 'racing' AND action = 'payouts.create' AND revoked_at IS NULL`,
      );
      expect(live.rows).toEqual([]);
      // And every credential handed out is refused by the gateway.
      for (const answer of answers.filter((candidate) => candidate.status === 200)) {
        const response = await gateway(
          'POST',
          '/connectors/racing/v1/payouts',
          answer.body.access_token,
          JSON.stringify({ destination: 'acct_1', amount: 50, currency: 'usd' }),
        );
        expect(response.status).toBe(401);
      }
    });
  });

  describe('numbers checked as forwarded', () => {
    let token: string;
    let before: number;
    beforeAll(async () => {
      await register(connector('numbers', payments.url));
      token = await payoutCredential('numbers', 30000);
    });
    beforeEach(() => (before = payments.received.length));

    const pay = (amount: string) => gateway('POST', '/connectors/numbers/v1/payouts', token, `{"destination":"acct_1","currency":"usd","amount":${amount}}`);

    it.each([
      ['more precision than a double', '30000.000000000000001'],
      ['exponent notation', '3e4'],
      ['a value past the double range', '1e400'],
      ['a huge exponent', '1e999999999'],
      ['a huge negative exponent', '30000e-999999999'],
      ['an integer past 2^53', '9007199254740993'],
      ['negative zero', '-0'],
    ])('refuses an amount with %s (400 naming the field); nothing is forwarded or spent', async (_name, amount) => {
      const response = await pay(amount);
      expect(response.status).toBe(400);
      expect(response.body).toEqual({ error: 'invalid_request', error_description: expect.stringMatching(/^body(\.| field )amount /), field: 'body.amount' });
      expect(payments.received.length).toBe(before);
    });

    it("refuses a negative amount by the catalogue's bound although the grant only says lte", async () => {
      const response = await pay('-1');
      expect(response.status).toBe(403);
      expect(response.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:amount_max' });
      expect(payments.received.length).toBe(before);
    });

    it('forwards an exact amount verbatim, once', async () => {
      const response = await pay('29999.50');
      expect(response.status).toBe(201);
      expect(payments.received[payments.received.length - 1].body.toString('utf8')).toBe('{"destination":"acct_1","currency":"usd","amount":29999.50}');
    });

    it('refuses inexact numbers in query parameters too', async () => {
      const operations = [
        {
          name: 'issues.list',
          method: 'GET',
          path: '/repos/{owner}/{repo}/issues',
          risk: 'read',
          constraints: { per_page: { in: 'query', field: 'per_page', op: 'lte', min: 1, max: 100 } },
        },
      ];
      await register({ id: 'code', name: 'Code', base_url: code.url, credential: { type: 'header', name: 'PRIVATE-TOKEN', value: CODE_SECRET }, operations });
      const task = await createTask(services, world.orchestrator, {
        allowed: [{ type: 'connector', connector: 'code', actions: ['issues.list'], constraints: { per_page: 30 } }],
      });
      const issued = await tokenRequest(
        services.issuer,
        world.agent,
        exchangeFields(task.task_token, [{ type: 'connector', connector: 'code', actions: ['issues.list'], constraints: { per_page: 30 } }]),
      );
      const list = (query: string) => gateway('GET', `/connectors/code/repos/a/b/issues?${query}`, issued.body.access_token);
      const seen = code.received.length;
      for (const query of ['per_page=30.0000000000000000001', 'per_page=3e1', 'per_page=-0']) {
        const response = await list(query);
        expect(response.status).toBe(400);
        expect(response.body.field).toBe('query.per_page');
      }
      expect((await list('per_page=0')).body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:per_page' });
      expect(code.received.length).toBe(seen);
      expect((await list('per_page=30')).status).toBe(200);
    });

    it('validates catalogue bounds at registration', async () => {
      const bad = BOUNDED_OPERATIONS.map((operation, index) =>
        index === 0
          ? { ...operation, constraints: { ...operation.constraints, amount_max: { in: 'body', field: 'amount', op: 'lte', min: 10, max: 1 } } }
          : operation,
      );
      const response = await admin('POST', '/v1/connectors', connector('bad-bounds', payments.url, { operations: bad }));
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'operations[0].constraints.amount_max.max', message: 'must not be below min' }]);
    });
  });
});
