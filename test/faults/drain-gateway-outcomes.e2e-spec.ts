import { Client } from 'pg';
import { stopServices } from '@writ/platform';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from '../support/grant-flow';
import { MockUpstream, startMockUpstream } from '../support/mock-upstreams';
import { http, tokenRequest } from '../support/oauth-client';
import { setConnectorCredential } from '../support/seed';
import { startTestServices, TestServices } from '../support/test-services';

jest.setTimeout(120_000);

const SECRET = 'sk_live_drain_51f0';
const PAYOUT = { destination: 'acct_1', amount: 42000, currency: 'usd' };

/**
 * SIGTERM's stop (stopServices) while gateway calls wait on their upstream: a new request is
 * refused 503 meanwhile, each admitted call is answered, and each forwarded call's outcome (`gateway.upstream`, queued with recordLater
 * after the answer) is durably written before the pool closes.
 */
describe('faults: draining the gateway keeps every call outcome', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  const held: Array<() => void> = [];

  beforeAll(async () => {
    upstream = await startMockUpstream((headers) => headers.authorization === `Bearer ${SECRET}`, {
      'POST /v1/payouts': (_request, response) => {
        held.push(() => {
          response.writeHead(201, { 'content-type': 'application/json' });
          response.end(JSON.stringify({ id: `po_${held.length}`, status: 'paid' }));
        });
      },
    });
    services = await startTestServices({ gateway: createGatewayApp, env: { WRIT_SHUTDOWN_TIMEOUT_SECONDS: '60' } });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
  });
  afterAll(async () => {
    await services?.close().catch(() => undefined);
    await upstream?.close();
  });

  it('refuses new requests 503, answers the calls in flight, then writes their outcomes before closing the pool', async () => {
    const tokens: string[] = [];
    for (let n = 0; n < 5; n += 1) {
      const task = await createTask(services, world.orchestrator);
      const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      expect(response.status).toBe(200);
      tokens.push(response.body.access_token as string);
    }
    const calls = tokens.map((token) =>
      http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(PAYOUT),
      }),
    );
    while (held.length < tokens.length) await new Promise((resolve) => setTimeout(resolve, 20));
    const stopped = stopServices(services.apps, services.runtime);
    // While the admitted calls drain, a request on a new connection (a load balancer that has
    // not yet seen the instance go) is refused with a clean 503, not a refused or reset connection.
    for (const url of [`${services.gatewayUrl}/connectors/payments/v1/payouts`, `${services.issuer}/oauth2/token`]) {
      const late = await fetch(url, { method: 'POST', body: 'x', headers: { connection: 'close' } });
      expect(late.status).toBe(503);
      expect(late.headers.get('retry-after')).toBe('1');
      expect(late.headers.get('connection')).toBe('close');
      expect(await late.json()).toEqual(expect.objectContaining({ error: 'temporarily_unavailable' }));
    }
    // Readiness fails (a balancer polling it stops sending here); liveness holds.
    const ready = await fetch(`${services.gatewayUrl}/health/ready`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual(expect.objectContaining({ failing: ['draining'] }));
    // Express routes these spellings to readiness too.
    for (const path of ['/health/ready/', '/HEALTH/Ready']) expect((await fetch(`${services.gatewayUrl}${path}`)).status).toBe(503);
    expect((await fetch(`${services.gatewayUrl}/health/live`)).status).toBe(200);
    // Let the upstream answer the admitted calls now.
    for (const release of held) release();
    const answers = await Promise.all(calls);
    for (const answer of answers) expect(answer.status).toBe(201);
    await stopped;

    const client = new Client({ connectionString: services.db.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ type: string; outcome: string; n: number }>(
        `SELECT type, outcome, count(*)::int AS n FROM audit_events WHERE type IN ('gateway.call', 'gateway.upstream') GROUP BY type, outcome ORDER BY type`,
      );
      expect(rows).toEqual([
        { type: 'gateway.call', outcome: 'success', n: tokens.length },
        { type: 'gateway.upstream', outcome: 'success', n: tokens.length },
      ]);
    } finally {
      await client.end();
    }
  });
});
