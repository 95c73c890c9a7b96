import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_console_api_31f0';

/** The admin API additions the console reads: who am I, policy history, calls per task, console headers. */
describe('admin API for the console', () => {
  let services: TestServices;
  let world: World;
  let payments: MockUpstream;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    payments = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ admin: createAdminApp, gateway: createGatewayApp });
    world = await seedWorld(services.runtime.pool, payments.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    for (const role of ['viewer', 'operator']) {
      tokens[role] = (await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: `${role}-1`, role }, services.adminToken)).body.token;
    }
  });
  afterAll(async () => {
    await services.close();
    await payments.close();
  });

  const admin = (method: string, path: string, body?: unknown, token = services.adminToken) => sendJson(method, `${services.adminUrl}${path}`, body, token);

  it('tells each token its own role, never the token, and refuses without one', async () => {
    const self = await admin('GET', '/v1/admin-tokens/self', undefined, tokens.viewer);
    expect(self.status).toBe(200);
    expect(self.body).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name: 'viewer-1', role: 'viewer' });
    expect((await admin('GET', '/v1/admin-tokens/self', undefined, tokens.operator)).body.role).toBe('operator');
    expect((await admin('GET', '/v1/admin-tokens/self')).body).toMatchObject({ name: 'bootstrap', role: 'admin' });
    const anonymous = await http(`${services.adminUrl}/v1/admin-tokens/self`);
    expect(anonymous.status).toBe(401);
    expect((await admin('GET', '/v1/admin-tokens/self', undefined, 'writ_admin_forged')).status).toBe(401);
    // The rest of /v1/admin-tokens stays admin-only.
    expect((await admin('GET', '/v1/admin-tokens', undefined, tokens.operator)).status).toBe(403);
  });

  it('counts the calls the gateway forwarded for each task', async () => {
    const task = await createTask(services, world.orchestrator);
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    const call = await http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${exchanged.body.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount: 100, currency: 'usd' }),
    });
    expect(call.status).toBe(201);
    await services.runtime.audit.drain();
    const read = await admin('GET', `/v1/tasks/${task.task_id}`, undefined, tokens.viewer);
    expect(read.body).toMatchObject({ calls: 1, history: { grants_issued: 1 } });
    const list = await admin('GET', '/v1/tasks?status=active', undefined, tokens.viewer);
    expect(list.body.items.find((item: { task_id: string }) => item.task_id === task.task_id)).toMatchObject({ calls: 1 });
    const idle = await createTask(services, world.orchestrator);
    expect((await admin('GET', `/v1/tasks/${idle.task_id}`)).body.calls).toBe(0);
  });

  it('lists stored policy versions, newest first, to viewers, without the bundle', async () => {
    expect((await admin('GET', '/v1/policies/history', undefined, tokens.viewer)).body).toEqual({ items: [], next_cursor: null });
    const bundle = await readFile(join(__dirname, '..', 'policies', 'dist', 'bundle.tar.gz'));
    const uploaded = await http(`${services.adminUrl}/v1/policies/active`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/gzip' },
      body: bundle,
    });
    expect(uploaded.status).toBe(200);
    const data = JSON.parse(JSON.stringify(services.policy.current().data));
    data.writ.config.quarantine_after = 5;
    expect((await admin('PUT', '/v1/policies/data', { data })).status).toBe(200);
    const first = await admin('GET', '/v1/policies/history?limit=1', undefined, tokens.viewer);
    expect(first.status).toBe(200);
    expect(first.body.items).toEqual([
      { version: expect.any(String), source: 'data update', loaded_by: expect.stringMatching(/^admin:/), loaded_at: expect.any(String), active: true },
    ]);
    expect(first.body.items[0]).not.toHaveProperty('bundle');
    const second = await admin('GET', `/v1/policies/history?limit=1&cursor=${first.body.next_cursor}`, undefined, tokens.viewer);
    expect(second.body.items).toEqual([expect.objectContaining({ version: uploaded.body.version, source: 'upload', active: false })]);
    expect(second.body.next_cursor).toBeNull();
    expect((await admin('GET', '/v1/policies/history?cursor=bm90LWEtY3Vyc29y')).status).toBe(400);
    await admin('DELETE', '/v1/policies/active');
  });

  it('serves the console under a CSP without unsafe-inline, never framed, and 404s unknown files', async () => {
    const missing = await http(`${services.adminUrl}/console/no-such-file.js`);
    expect([404, 503]).toContain(missing.status);
    expect(missing.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(missing.headers.get('content-security-policy')).not.toContain('unsafe-inline');
    expect(missing.headers.get('x-frame-options')).toBe('DENY');
    expect(missing.headers.get('x-content-type-options')).toBe('nosniff');
    expect((await http(`${services.adminUrl}/console/%2e%2e/%2e%2e/package.json`)).status).not.toBe(200);
  });

  it('shares walks of the audit chain among a burst of evidence requests, not one walk each', async () => {
    const task = await createTask(services, world.orchestrator);
    const audit = services.runtime.audit;
    const walk = audit.verify.bind(audit);
    const read = audit.forTask.bind(audit);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let readDone = 0;
    const verify = jest.spyOn(audit, 'verify').mockImplementation(async (options) => {
      await gate;
      return walk(options);
    });
    const forTask = jest.spyOn(audit, 'forTask').mockImplementation(async (id) => {
      const events = await read(id);
      readDone += 1;
      return events;
    });
    try {
      const burst = 6;
      const answers = Array.from({ length: burst }, () => admin('GET', `/v1/tasks/${task.task_id}/evidence`, undefined, tokens.viewer));
      // Every request has read its events (and so asked for its walk) while the first walk is held.
      while (readDone < burst) await new Promise((resolve) => setTimeout(resolve, 5));
      for (let i = 0; i < 3; i += 1) await new Promise((resolve) => setImmediate(resolve));
      release();
      for (const answer of await Promise.all(answers)) {
        expect(answer.status).toBe(200);
        expect(answer.body.chain).toMatchObject({ verified: true });
      }
      // The one under way, then one for all who came while it ran (its snapshot predates their reads).
      expect(verify).toHaveBeenCalledTimes(2);
    } finally {
      verify.mockRestore();
      forTask.mockRestore();
    }
  });

  it('documents the additions in the OpenAPI document', async () => {
    const doc = await http(`${services.adminUrl}/docs-json`);
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/v1/admin-tokens/self', '/v1/policies/history']));
    expect(doc.body.components.schemas.AdminTaskDto.properties).toHaveProperty('calls');
  });
});

/** A hostile page in the admin's browser, with the failure throttle at its real strength. */
describe('admin API against another site in the admin browser', () => {
  const LIMIT = 5;
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp, env: { WRIT_THROTTLE_SOURCE_FAILURES: String(LIMIT) } });
  });
  afterAll(async () => services.close());

  it("refuses another site's requests without counting them, so they cannot lock the admin out", async () => {
    // What Chromium sends for `fetch(url, {mode: 'no-cors', method: 'POST', body})` and an
    // <img src> from a page on another site (or another port of the same host: `same-site`).
    const foreign: RequestInit[] = [
      {
        method: 'POST',
        headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors', origin: 'https://evil.example', 'content-type': 'text/plain' },
        body: 'x',
      },
      { method: 'GET', headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'image' } },
      {
        method: 'POST',
        headers: { 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'no-cors', origin: 'http://127.0.0.1:1', 'content-type': 'text/plain' },
        body: 'x',
      },
    ];
    const answers = await Promise.all(Array.from({ length: LIMIT * 4 }, (_, i) => http(`${services.adminUrl}/v1/agents`, foreign[i % foreign.length])));
    for (const answer of answers) {
      expect(answer.status).toBe(403);
      expect(answer.body).toEqual({ error: 'forbidden', message: expect.stringContaining('another site') });
      expect(answer.headers.get('cache-control')).toBe('no-store');
    }
    // The admin, from the same address, is still served.
    const self = await sendJson('GET', `${services.adminUrl}/v1/admin-tokens/self`, undefined, services.adminToken);
    expect(self.status).toBe(200);
    // Even with its admin token, a cross-site request is refused (the console is same-origin).
    const forged = await http(`${services.adminUrl}/v1/admin-tokens/self`, {
      headers: { authorization: `Bearer ${services.adminToken}`, 'sec-fetch-site': 'cross-site' },
    });
    expect(forged.status).toBe(403);
    // The console's own calls (same-origin) and tools without Fetch Metadata still authenticate as before.
    const sameOrigin = await http(`${services.adminUrl}/v1/admin-tokens/self`, {
      headers: { authorization: `Bearer ${services.adminToken}`, 'sec-fetch-site': 'same-origin' },
    });
    expect(sameOrigin.status).toBe(200);
    expect((await http(`${services.adminUrl}/v1/agents`)).status).toBe(401);
  });
});
