import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { Pool } from 'pg';
import { Agent, request } from 'undici';
import { createClientKey, jwksOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { eventually } from './support/eventually';
import { sample } from './support/metrics';
import { http, sendJson } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/** A request with exactly this `Host` header (as a DNS-rebinding page's browser sends it). */
function withHost(base: string, path: string, host: string): Promise<number> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method: 'GET', headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

/** An HTTP/1.0 request without any `Host`, written as it is; resolves with the status line. */
function withoutHost(base: string, path: string): Promise<string> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.write(`GET ${path} HTTP/1.0\r\n\r\n`));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text.split('\r\n')[0]));
    socket.on('error', reject);
  });
}

// A long window, so that a block never ends during the suite; a low limit, reached in a few requests.
const THROTTLE = { WRIT_THROTTLE_WINDOW_SECONDS: '3600', WRIT_THROTTLE_SOURCE_FAILURES: '3', WRIT_THROTTLE_AUDIT_EVENTS: '3' };

/**
 * What an operator alerts on, scraped from `/metrics` after the event: rows refused by their
 * integrity tag (tampering), `Host` refusals, the throttle's in-memory blocks and the writes of
 * their counts, admin `Idempotency-Key` replays and conflicts, and a stored policy refused for its
 * tag (named in readiness). Label values are Writ's own, never the caller's text.
 */
describe('operator metrics of the integrity, Host, throttle and idempotency defences', () => {
  let services: TestServices;
  let dba: Pool;
  const dispatchers = new Map<string, Agent>();

  beforeAll(async () => {
    services = await startTestServices({
      admin: createAdminApp,
      gateway: createGatewayApp,
      env: { ...THROTTLE, WRIT_ALLOWED_HOSTS: 'admin.example.com' },
    });
    dba = new Pool({ connectionString: services.db.url, max: 2 });
  });
  afterAll(async () => {
    await Promise.all([...dispatchers.values()].map((dispatcher) => dispatcher.close()));
    await dba.end();
    await services.close();
  });

  const scrape = async (): Promise<string> => {
    const response = await http(`${services.adminUrl}/metrics`);
    expect(response.status).toBe(200);
    return response.text;
  };
  const admin = (method: string, path: string, body?: unknown, token = services.adminToken) => sendJson(method, `${services.adminUrl}${path}`, body, token);
  /** A request from a given loopback source address (the whole 127/8 is local on Linux). */
  async function from(source: string, url: string, headers: Record<string, string>): Promise<number> {
    let dispatcher = dispatchers.get(source);
    if (!dispatcher) {
      dispatcher = new Agent({ localAddress: source });
      dispatchers.set(source, dispatcher);
    }
    const response = await request(url, { method: 'GET', headers, dispatcher });
    await response.body.text();
    return response.statusCode;
  }

  it('shows every tagged table from 0, and counts a tampered admin token under admin_tokens', async () => {
    const before = await scrape();
    for (const table of ['tasks', 'agents', 'orchestrators', 'admin_tokens', 'connectors', 'identity_providers', 'policies', 'approvals']) {
      expect([table, sample(before, 'writ_integrity_failures_total', { table })]).toEqual([table, 0]);
    }
    const created = await admin('POST', '/v1/admin-tokens', { name: 'tampered-viewer', role: 'viewer' });
    expect(created.status).toBe(201);
    expect((await admin('GET', '/v1/agents', undefined, created.body.token)).status).toBe(200);
    // A database administrator promotes the viewer token by hand: its tag no longer verifies.
    await dba.query(`UPDATE admin_tokens SET role = 'admin' WHERE id = $1`, [created.body.id]);
    expect((await admin('GET', '/v1/agents', undefined, created.body.token)).status).toBe(401);
    const after = await scrape();
    expect(sample(after, 'writ_integrity_failures_total', { table: 'admin_tokens' })).toBe(1);
    expect(sample(after, 'writ_integrity_failures_total', { table: 'agents' })).toBe(0);
  });

  it('counts Host refusals by service and reason, never naming the Host', async () => {
    const before = await scrape();
    expect(sample(before, 'writ_host_refusals_total', { service: 'admin', reason: 'not_allowed' })).toBe(0);
    expect(sample(before, 'writ_host_refusals_total', { service: 'admin', reason: 'malformed' })).toBe(0);
    expect(await withHost(services.adminUrl, '/v1/agents', 'rebound-7f3a.attacker.example')).toBe(421);
    expect(await withHost(services.adminUrl, '/v1/agents', 'rebound-7f3a.attacker.example:4002')).toBe(421);
    expect(await withHost(services.gatewayUrl, '/connectors/payments/v1/payouts', 'rebound-7f3a.attacker.example')).toBe(421);
    expect(await withoutHost(services.adminUrl, '/v1/agents')).toMatch(/^HTTP\/1\.[01] 400 /);
    // Probes answer whatever Host says, and are not refusals.
    expect(await withHost(services.adminUrl, '/health/live', 'rebound-7f3a.attacker.example')).toBe(200);
    const after = await scrape();
    expect(sample(after, 'writ_host_refusals_total', { service: 'admin', reason: 'not_allowed' })).toBe(2);
    expect(sample(after, 'writ_host_refusals_total', { service: 'admin', reason: 'malformed' })).toBe(1);
    expect(sample(after, 'writ_host_refusals_total', { service: 'connector-gateway', reason: 'not_allowed' })).toBe(1);
    expect(sample(after, 'writ_host_refusals_total', { service: 'authorization-server', reason: 'not_allowed' })).toBe(0);
    expect(after).not.toContain('rebound-7f3a');
  });

  it('shows a blocked source held in memory, the refusals answered from it, and a failed write of their counts', async () => {
    const url = `${services.adminUrl}/v1/agents`;
    const before = await scrape();
    expect(sample(before, 'writ_throttle_blocked_sources', { scope: 'admin' })).toBe(0);
    expect(sample(before, 'writ_throttle_flush_failures_total')).toBe(0);
    const fromMemoryBefore = sample(before, 'writ_throttle_memory_refusals_total', { scope: 'admin' })!;
    // Three failures, then the fourth finds the source past its limit (in PostgreSQL) and blocks it.
    const statuses: number[] = [];
    for (let n = 0; n < 4; n += 1) statuses.push(await from('127.0.6.1', url, { authorization: `Bearer writ_admin_guess_${n}` }));
    expect(statuses).toEqual([401, 401, 401, 429]);
    let scraped = await scrape();
    expect(sample(scraped, 'writ_throttle_blocked_sources', { scope: 'admin' })).toBe(1);
    expect(sample(scraped, 'writ_throttle_memory_refusals_total', { scope: 'admin' })).toBe(fromMemoryBefore);
    // The database refuses the counts' write (here: the service login loses its grant on the table).
    await dba.query('REVOKE INSERT, UPDATE ON throttle_failures FROM writ_service');
    try {
      for (let n = 0; n < 5; n += 1) expect(await from('127.0.6.1', url, { authorization: `Bearer ${services.adminToken}` })).toBe(429);
      scraped = await scrape();
      expect(sample(scraped, 'writ_throttle_memory_refusals_total', { scope: 'admin' })).toBe(fromMemoryBefore + 5);
      // Flushed every second: the write fails, and the counts are kept.
      await eventually(
        async () => sample(await scrape(), 'writ_throttle_flush_failures_total')!,
        (failures) => failures > 0,
      );
    } finally {
      await dba.query('GRANT INSERT, UPDATE ON throttle_failures TO writ_service');
    }
    // Written once the grant is back: the 5 refusals from memory join the window's row.
    await eventually(
      async () =>
        Number(
          (await dba.query<{ n: number }>(`SELECT coalesce(sum(count), 0)::int AS n FROM throttle_failures WHERE key = 'admin|source|127.0.6.1'`)).rows[0].n,
        ),
      (count) => count === 9,
    );
    // Another source is not held.
    expect(await from('127.0.6.2', url, { authorization: `Bearer ${services.adminToken}` })).toBe(200);
    expect(sample(await scrape(), 'writ_throttle_blocked_sources', { scope: 'admin' })).toBe(1);
  });

  it('counts Idempotency-Key replays and conflicts (422)', async () => {
    const jwks = jwksOf(await createClientKey());
    const post = (body: unknown, key: string) =>
      http(`${services.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${services.adminToken}`, 'idempotency-key': key },
        body: JSON.stringify(body),
      });
    const before = await scrape();
    expect(sample(before, 'writ_admin_idempotency_total', { outcome: 'replayed' })).toBe(0);
    expect(sample(before, 'writ_admin_idempotency_total', { outcome: 'conflict' })).toBe(0);
    expect((await post({ name: 'metered', jwks }, 'metrics-key-1')).status).toBe(201);
    for (let n = 0; n < 2; n += 1) expect((await post({ name: 'metered', jwks }, 'metrics-key-1')).headers.get('idempotent-replayed')).toBe('true');
    expect((await post({ name: 'metered-other', jwks }, 'metrics-key-1')).status).toBe(422);
    const after = await scrape();
    expect(sample(after, 'writ_admin_idempotency_total', { outcome: 'replayed' })).toBe(2);
    expect(sample(after, 'writ_admin_idempotency_total', { outcome: 'conflict' })).toBe(1);
  });

  it('names a stored policy refused for its tag in readiness, and counts it under policies', async () => {
    const data = JSON.parse(JSON.stringify(services.policy.current().data)) as { writ: { config: Record<string, unknown> } };
    data.writ.config.quarantine_after = 7;
    const activated = await admin('PUT', '/v1/policies/data', { data });
    expect(activated.status).toBe(200);
    const version = activated.body.version as string;
    await eventually(
      () => services.policy.current().version,
      (current) => current === version,
    );
    const ready = await http(`${services.authUrl}/health/ready`);
    expect(ready.status).toBe(200);
    // The instance installs another policy meanwhile (as after a restart), then finds the active
    // row's data edited in place by a database administrator.
    data.writ.config.quarantine_after = 1000;
    await dba.query('UPDATE policies SET data = $2 WHERE version = $1', [version, JSON.stringify(data)]);
    await services.policy.reload();
    const refused = await eventually(
      () => http(`${services.authUrl}/health/ready`),
      (answer) => answer.status === 503,
    );
    expect(refused.body.failing).toEqual(['policy']);
    expect(refused.body.checks.policy).toEqual({ status: 'down', reason: expect.stringMatching(/integrity tag does not verify/) });
    expect(sample(await scrape(), 'writ_integrity_failures_total', { table: 'policies' })).toBeGreaterThan(0);
  });
});
