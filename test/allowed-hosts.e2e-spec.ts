import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { startTestServices, TestServices } from './support/test-services';

interface Answer {
  status: number;
  body: string;
}

/** One request with exactly this `Host` header, as a DNS-rebinding page's browser sends it. */
function call(base: string, path: string, host: string, headers: Record<string, string> = {}): Promise<Answer> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method: 'GET', headers: { ...headers, host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A request written as it is (Node's client always sends a `Host`, and only paths). */
function rawCall(base: string, request: string): Promise<string> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.write(request));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

// A low limit: were the rebinding page's requests counted, the admin's address would be blocked.
const THROTTLE = { WRIT_THROTTLE_SOURCE_FAILURES: '3', WRIT_THROTTLE_AUDIT_EVENTS: '3' };

/**
 * `WRIT_ALLOWED_HOSTS`: a page that rebinds its DNS name to a Writ service is refused (`421`)
 * before authentication and before the failure throttle counts anything, on every service;
 * the listed names (any case, a trailing dot, with or without a port, IPv6 literals) and the
 * issuer's and gateway's hosts are answered; health probes by address still are.
 */
describe('allowed Host names', () => {
  const failures = async (services: TestServices) =>
    Number((await services.runtime.pool.query<{ n: string }>(`SELECT coalesce(sum(count), 0) AS n FROM throttle_failures`)).rows[0].n);
  const failureEvents = async (services: TestServices) =>
    Number(
      (
        await services.runtime.pool.query<{ n: string }>(
          `SELECT count(*) AS n FROM audit_events WHERE type IN ('admin.authentication_failed', 'token.refused', 'gateway.call')`,
        )
      ).rows[0].n,
    );

  describe('when set', () => {
    let services: TestServices;
    beforeAll(async () => {
      services = await startTestServices({
        gateway: createGatewayApp,
        admin: createAdminApp,
        env: { ...THROTTLE, WRIT_ALLOWED_HOSTS: 'Admin.Example.COM.,console.example.com:4443,[0:0::1]' },
      });
    });
    afterAll(() => services.close());

    it('refuses a rebinding Host with 421 on every service, before authentication, and counts nothing', async () => {
      const eventsBefore = await failureEvents(services);
      const targets: [string, string][] = [
        [services.adminUrl, '/v1/agents'],
        [services.adminUrl, '/console/'],
        [services.adminUrl, '/docs-json'],
        [services.adminUrl, '/metrics'],
        [services.authUrl, '/v1/tasks/00000000-0000-4000-8000-000000000000'],
        [services.gatewayUrl, '/connectors/payments/v1/payouts'],
      ];
      for (let round = 0; round < 5; round += 1) {
        for (const [base, path] of targets) {
          for (const host of [
            'rebind.attacker.example',
            `rebind.attacker.example:${new URL(base).port}`,
            'admin.example.com.attacker.example',
            'console.example.com:4444',
          ]) {
            const answer = await call(base, path, host, { authorization: 'Bearer nope' });
            expect(answer.status).toBe(421);
            expect(JSON.parse(answer.body)).toEqual({ error: 'misdirected_request', error_description: expect.stringContaining('Host') });
            expect(answer.body).not.toContain('attacker');
          }
        }
      }
      expect(await failures(services)).toBe(0);
      expect(await failureEvents(services)).toBe(eventsBefore);
      // The admin's address is not throttled: its own failure is a 401, not a 429.
      expect((await call(services.adminUrl, '/v1/agents', 'admin.example.com', { authorization: 'Bearer nope' })).status).toBe(401);
      expect(await failures(services)).toBe(1);
    });

    it('answers the listed names (case, trailing dot, ports, IPv6 literals) and the issuer and gateway hosts', async () => {
      const port = new URL(services.adminUrl).port;
      const accepted = [
        'admin.example.com',
        'ADMIN.EXAMPLE.COM',
        'admin.example.com.',
        `Admin.Example.Com.:${port}`,
        'admin.example.com:1',
        'console.example.com:4443',
        '[::1]',
        `[0:0:0:0:0:0:0:1]:${port}`,
        '127.0.0.1', // the issuer's (and gateway's) host
        `127.0.0.1:${port}`,
      ];
      for (const host of accepted) {
        const answer = await call(services.adminUrl, '/v1/agents', host, { authorization: `Bearer ${services.adminToken}` });
        expect({ host, status: answer.status }).toEqual({ host, status: 200 });
      }
      for (const host of ['console.example.com', 'console.example.com:443', 'localhost', 'foo.localhost', '10.0.0.1', '[::2]']) {
        const answer = await call(services.adminUrl, '/v1/agents', host, { authorization: `Bearer ${services.adminToken}` });
        expect({ host, status: answer.status }).toEqual({ host, status: 421 });
      }
    });

    it('refuses a missing or malformed Host with 400 naming it', async () => {
      const answer = await rawCall(services.adminUrl, 'GET /v1/agents HTTP/1.0\r\n\r\n');
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer).toContain('the Host header is missing');
      for (const host of ['user@admin.example.com', 'admin.example.com:0', 'admin.example.com:99999', '[admin]']) {
        const bad = await call(services.adminUrl, '/v1/agents', host);
        expect({ host, status: bad.status }).toEqual({ host, status: 400 });
      }
    });

    it('refuses another Host with a target that is no URL in JSON, not a 500', async () => {
      for (const base of [services.adminUrl, services.authUrl, services.gatewayUrl]) {
        const answer = await rawCall(base, 'GET http://[x/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        expect(answer).toMatch(/^HTTP\/1\.1 421 /);
        expect(answer).toContain('"error":"misdirected_request"');
      }
    });

    it('cannot be passed by another authority, a forwarded Host, a repeated Host or a path that looks like a probe', async () => {
      const before = await failures(services);
      const eventsBefore = await failureEvents(services);
      const send = (target: string, headers: string, method = 'GET') =>
        rawCall(services.adminUrl, `${method} ${target} HTTP/1.1\r\n${headers}Authorization: Bearer nope\r\nConnection: close\r\n\r\n`);
      const rebinding = 'Host: rebind.attacker.example\r\n';
      const misdirected = [
        // The target's authority is never read as the Host.
        send('http://admin.example.com/v1/agents', rebinding),
        send('http://127.0.0.1/v1/agents', rebinding),
        // Nor are proxy headers, which no service trusts.
        send('/v1/agents', `${rebinding}X-Forwarded-Host: admin.example.com\r\nForwarded: host=admin.example.com\r\n`),
        // Only the exact probe paths are exempt, only to GET and HEAD.
        ...[
          '/health/live/../../v1/agents',
          '//health/live',
          '/health/live;x',
          '/health/live/',
          '/HEALTH/LIVE',
          '/health/live%2F..%2Fv1%2Fagents',
          '/health/%6Cive',
        ].map((target) => send(target, rebinding)),
        send('/health/live', rebinding, 'POST'),
        send('http://admin.example.com/health/live', rebinding),
      ];
      for (const answer of await Promise.all(misdirected)) expect(answer).toMatch(/^HTTP\/1\.1 421 /);
      const malformed = [
        // A repeated Host, in either order: refused, never read as its first copy.
        send('/v1/agents', `Host: admin.example.com\r\n${rebinding}`),
        send('/v1/agents', `${rebinding}Host: admin.example.com\r\n`),
        ...[
          'admin.example.com;x',
          'admin%2eexample.com',
          'admin.example.com x',
          'user:pass@admin.example.com',
          'admin.example.com:4443@rebind.attacker.example',
          'admin.example.com/x',
        ].map((host) => send('/v1/agents', `Host: ${host}\r\n`)),
      ];
      for (const answer of await Promise.all(malformed)) expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      // A name outside ASCII is not a Host (browsers send IDNA): refused, by Node or by the check.
      expect(await send('/v1/agents', 'Host: admin.exampl\u00e9.com\r\n')).toMatch(/^HTTP\/1\.1 400 /);
      expect(await failures(services)).toBe(before);
      expect(await failureEvents(services)).toBe(eventsBefore);
    });

    it('answers health probes whatever their Host', async () => {
      for (const base of [services.adminUrl, services.authUrl, services.gatewayUrl]) {
        expect((await call(base, '/health/live', '10.1.2.3:8080')).status).toBe(200);
        expect((await call(base, '/health/ready', 'pod.internal')).status).toBe(200);
      }
    });
  });

  describe('when unset, bound to loopback', () => {
    let services: TestServices;
    beforeAll(async () => {
      services = await startTestServices({ admin: createAdminApp, env: THROTTLE });
    });
    afterAll(() => services.close());

    it('refuses a rebinding DNS name without counting it, and answers loopback names and IP addresses', async () => {
      const port = new URL(services.adminUrl).port;
      for (let n = 0; n < 10; n += 1) {
        expect((await call(services.adminUrl, '/v1/agents', `rebind.attacker.example:${port}`)).status).toBe(421);
        expect((await call(services.authUrl, '/v1/tasks/00000000-0000-4000-8000-000000000000', 'rebind.attacker.example')).status).toBe(421);
      }
      expect(await failures(services)).toBe(0);
      for (const host of [`localhost:${port}`, 'LOCALHOST.', `console.localhost:${port}`, `127.0.0.1:${port}`, '127.0.0.2', `[::1]:${port}`, '192.0.2.1']) {
        const answer = await call(services.adminUrl, '/v1/agents', host, { authorization: `Bearer ${services.adminToken}` });
        expect({ host, status: answer.status }).toEqual({ host, status: 200 });
      }
    });
  });
});
