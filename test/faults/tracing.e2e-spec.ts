import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from '../support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from '../support/mock-upstreams';
import { http, tokenRequest } from '../support/oauth-client';
import { setConnectorCredential } from '../support/seed';
import { startTestServices, TestServices } from '../support/test-services';
import { createClientKey, createTestDatabase, jwksOf } from '@writ/testing';
import { buildOnce, startWrit } from './support/writ-process';

jest.setTimeout(120_000);

const SECRET = 'sk_live_tracing_0123456789';
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;

/** An OTLP/HTTP collector that keeps every export body. */
async function startCollector(): Promise<{ url: string; bodies: string[]; server: Server }> {
  const bodies: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      bodies.push(body);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies, server };
}

async function payThroughGateway(services: TestServices, world: World, traceparent = TRACEPARENT): Promise<number> {
  const task = await createTask(services, world.orchestrator);
  const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
  expect(exchanged.status).toBe(200);
  const response = await http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${exchanged.body.access_token}`, 'content-type': 'application/json', traceparent },
    body: JSON.stringify({ destination: 'acct_1', amount: 42000, currency: 'usd' }),
  });
  return response.status;
}

describe('tracing: spans over OTLP, traceparent upstream', () => {
  let payments: MockUpstream;
  beforeAll(async () => {
    payments = await startPaymentsUpstream(SECRET);
  });
  afterAll(async () => {
    await payments?.close();
  });

  it('with OTEL_EXPORTER_OTLP_ENDPOINT: continues the caller’s trace upstream, under the gateway’s upstream span', async () => {
    const collector = await startCollector();
    const services = await startTestServices({ gateway: createGatewayApp, env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url } });
    try {
      const world = await seedWorld(services.runtime.pool, payments.url);
      await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
      expect(await payThroughGateway(services, world)).toBe(201);
      const sent = payments.received[payments.received.length - 1].headers.traceparent as string;
      // Same trace, the gateway's upstream span as parent (not the agent's span id).
      expect(sent).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-0[01]$`));
      expect(sent).not.toBe(TRACEPARENT);
    } finally {
      await services.close();
      collector.server.close();
    }
  });

  it("ignores the caller's sampled flag: an agent can neither switch tracing off for its calls nor force it on", async () => {
    const collector = await startCollector();
    /** The traceparent the upstream got for a call sent with `traceparent`, tracing on with `env`. */
    const upstreamTraceparent = async (env: Record<string, string>, traceparent: string) => {
      const services = await startTestServices({ gateway: createGatewayApp, env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, ...env } });
      try {
        const world = await seedWorld(services.runtime.pool, payments.url);
        await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
        expect(await payThroughGateway(services, world, traceparent)).toBe(201);
        return payments.received[payments.received.length - 1].headers.traceparent as string;
      } finally {
        await services.close();
      }
    };
    try {
      // Sampled flag set, the operator's ratio 0: the call is not traced for the agent's asking.
      const forced = await upstreamTraceparent({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, TRACEPARENT);
      // Sampled flag clear, every request traced (the default): the call is traced all the same.
      const hidden = await upstreamTraceparent({}, `00-${TRACE_ID}-00f067aa0ba902b7-00`);
      expect([forced, hidden]).toEqual([
        expect.stringMatching(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-00$`)),
        expect.stringMatching(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`)),
      ]);
    } finally {
      collector.server.close();
    }
  });

  // Jest cannot run the exporter's dynamic import('http'): the export itself is checked on the
  // built services, as production runs them.
  it('exports request, database and audit spans over OTLP/HTTP from the built services', async () => {
    buildOnce();
    const collector = await startCollector();
    const db = await createTestDatabase();
    const writ = await startWrit({
      env: {
        WRIT_DATABASE_URL: db.serviceUrl ?? db.url,
        WRIT_MASTER_KEY: Buffer.alloc(32, 9).toString('base64'),
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_SERVICE_NAME: 'writ-traced',
      },
    });
    try {
      const jwks = jwksOf(await createClientKey());
      const created = await fetch(`${writ.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${writ.adminToken}`, 'content-type': 'application/json', traceparent: TRACEPARENT },
        body: JSON.stringify({ id: 'traced', name: 'traced', jwks }),
      });
      expect(created.status).toBe(201);
    } finally {
      writ.child.kill('SIGTERM');
      expect((await writ.exited).code).toBe(0);
      await db.drop();
    }
    for (let tries = 0; tries < 50 && !collector.bodies.join('').includes('audit.commit'); tries += 1) await new Promise((resolve) => setTimeout(resolve, 100));
    collector.server.close();
    const exported = collector.bodies.join('\n');
    for (const name of ['POST admin', 'pg.query', 'audit.commit', 'writ-traced', TRACE_ID]) expect(exported).toContain(name);
    expect(exported).not.toContain(writ.adminToken);
  });

  it('with WRIT_TRACE_FORWARD=false: no traceparent reaches the upstream', async () => {
    const services = await startTestServices({ gateway: createGatewayApp, env: { WRIT_TRACE_FORWARD: 'false' } });
    try {
      const world = await seedWorld(services.runtime.pool, payments.url);
      await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
      expect(await payThroughGateway(services, world)).toBe(201);
      expect(payments.received[payments.received.length - 1].headers).not.toHaveProperty('traceparent');
    } finally {
      await services.close();
    }
  });
});
