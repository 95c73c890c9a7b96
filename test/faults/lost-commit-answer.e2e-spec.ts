import { createServer, connect, type Server, type Socket } from 'node:net';
import { Client } from 'pg';
import { createTestDatabase, type TestDatabase, waitForLockWaiter } from '@writ/testing';
import { eventually } from '../support/eventually';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, type World } from '../support/grant-flow';
import { http, tokenRequest, type TestResponse } from '../support/oauth-client';
import { type MockUpstream, startPaymentsUpstream } from '../support/mock-upstreams';
import { setConnectorCredential } from '../support/seed';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { startTestServices, type TestServices } from '../support/test-services';

jest.setTimeout(120_000);

const UPSTREAM_SECRET = 'sk_live_lost_commit_5e1a';

/**
 * A TCP relay in front of PostgreSQL that, once armed, loses the answer to the first message
 * that appends enough audit events of a type: the message reaches the server
 * (which commits it), then the connection is cut before anything comes back, as a network or a
 * proxy failing at that moment would.
 */
class LossyRelay {
  private server: Server;
  private armed: { type: string; least: number } | undefined;
  fired = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => this.relay(client));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as { port: number }).port;
  }

  /** Loses the answer to the next appending message with at least `least` events of `type`. */
  arm(type: string, least: number): void {
    this.armed = { type, least };
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket): void {
    const server = connect(this.target.port, this.target.host);
    let swallowing = false;
    client.on('error', () => undefined);
    server.on('error', () => undefined);
    client.on('close', () => server.destroy());
    server.on('close', () => client.destroy());
    server.on('data', (chunk: Buffer) => {
      if (!swallowing) client.write(chunk);
    });
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      const armed = this.armed;
      if (armed && text.includes('EXECUTE writ_audit_append_doc') && text.split(`"type":"${armed.type}"`).length - 1 >= armed.least) {
        this.armed = undefined;
        this.fired += 1;
        swallowing = true;
        server.write(chunk);
        // Long enough for the server to run and commit the message; then the link breaks.
        setTimeout(() => {
          client.destroy();
          server.destroy();
        }, 500);
        return;
      }
      server.write(chunk);
    });
  }
}

/** `url` with its host and port replaced by the relay's. */
function viaRelay(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}

describe('faults: the answer to an audit batch commit is lost after the commit', () => {
  let db: TestDatabase;
  let relay: LossyRelay;
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(UPSTREAM_SECRET);
    db = await createTestDatabase();
    const target = new URL(db.url);
    relay = new LossyRelay({ host: target.hostname, port: Number(target.port) });
    const port = await relay.listen();
    services = await startTestServices({
      gateway: createGatewayApp,
      db: { url: viaRelay(db.url, port), serviceUrl: db.serviceUrl ? viaRelay(db.serviceUrl, port) : undefined, name: db.name, drop: () => db.drop() },
    });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: UPSTREAM_SECRET });
  });
  afterAll(async () => {
    await services?.close();
    await relay?.close();
    await upstream?.close();
    await db?.drop().catch(() => undefined);
  });

  /**
   * Sends one request while the test holds the chain head, so that its batch waits on it and the
   * next three queue behind it, then makes the relay lose the answer to the commit of the second
   * batch (the three together), releases the head and returns the four answers.
   */
  async function loseSecondBatch(send: () => Promise<TestResponse>, type: string): Promise<TestResponse[]> {
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM audit_chain_head WHERE id = 1 FOR UPDATE');
      const first = send();
      await waitForLockWaiter(services.runtime.pool, 'the first batch never waited on the chain head');
      const rest = [send(), send(), send()];
      const audit = services.runtime.audit as unknown as { queue: unknown[] };
      await eventually(
        async () => audit.queue.length,
        (queued) => queued >= 3,
      );
      relay.arm(type, 2);
      await holder.query('COMMIT');
      return await Promise.all([first, ...rest]);
    } finally {
      await holder.end();
    }
  }

  /** Each answer but the first batch's is 503 with Retry-After: the outcome is unknown, never a client fault. */
  function expectOneServedRestUnavailable(answers: TestResponse[], served: number): void {
    expect(answers.filter((answer) => answer.status === served)).toHaveLength(1);
    for (const answer of answers.filter((candidate) => candidate.status !== served)) {
      expect({ status: answer.status, body: answer.body }).toEqual({ status: 503, body: expect.objectContaining({ error: 'temporarily_unavailable' }) });
      expect(answer.headers.get('retry-after')).toMatch(/^[0-9]+$/);
    }
  }

  it('answers every exchange of the batch 503 (never 401 or 500), and every token returned is in a valid chain', async () => {
    const task = await createTask(services, world.orchestrator);
    const exchange = () => tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    const answers = await loseSecondBatch(exchange, 'token.issued');
    expect(relay.fired).toBe(1);

    expectOneServedRestUnavailable(answers, 200);

    // The lost batch did commit: its credentials and their events are there, once each.
    const { rows } = await services.runtime.pool.query<{ jti: string; n: number }>(
      `SELECT data->>'jti' AS jti, count(*)::int AS n FROM audit_events WHERE type = 'token.issued' AND task_id = $1 GROUP BY 1`,
      [task.task_id],
    );
    expect(rows).toHaveLength(4);
    for (const row of rows) expect(row.n).toBe(1);
    const recorded = new Set(rows.map((row) => row.jti));
    for (const answer of answers.filter((candidate) => candidate.status === 200)) {
      const jti = JSON.parse(Buffer.from((answer.body.access_token as string).split('.')[1], 'base64url').toString()).jti as string;
      expect(recorded.has(jti)).toBe(true);
    }
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });

    // The instance serves again without a restart.
    const again = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(again.status).toBe(200);
  });

  it('answers every gateway call of the batch 503 (never 401), and forwards only the call it answered', async () => {
    const tokens: string[] = [];
    for (let n = 0; n < 4; n += 1) {
      const task = await createTask(services, world.orchestrator);
      const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      expect(exchanged.status).toBe(200);
      tokens.push(exchanged.body.access_token as string);
    }
    const forwardedBefore = upstream.received.length;
    const pay = () =>
      http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens.shift()!}`, 'content-type': 'application/json' },
        body: JSON.stringify({ destination: 'acct_1', amount: 42000, currency: 'usd' }),
      });
    const answers = await loseSecondBatch(pay, 'gateway.call');
    expect(relay.fired).toBe(2);

    expectOneServedRestUnavailable(answers, 201);
    expect(upstream.received.length - forwardedBefore).toBe(1);
    await services.runtime.audit.drain();
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
  });
});
