import { createServer, IncomingMessage, Server } from 'node:http';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { verifyWebhookSignature } from '../apps/admin/src/approvals/approval-webhook-signature';
import { ApprovalWebhookPayload, ApprovalWebhookService } from '../apps/admin/src/approvals/approval-webhook.service';
import { createTask, exchangeFields, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'writ-approval-webhook-test-secret-0123456789';

interface Received {
  id: string | undefined;
  signed: boolean;
  payload: ApprovalWebhookPayload;
}

/** A loopback receiver that checks each signature and answers what `answer` says. */
async function startReceiver(
  answer: (payload: ApprovalWebhookPayload, attempt: number) => number,
): Promise<{ url: string; received: Received[]; close: () => Promise<void> }> {
  const received: Received[] = [];
  const server: Server = createServer((request: IncomingMessage, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const signed = verifyWebhookSignature(Buffer.from(SECRET), request.headers['writ-signature'] as string | undefined, body);
      const payload = JSON.parse(body) as ApprovalWebhookPayload;
      received.push({ id: request.headers['writ-webhook-id'] as string | undefined, signed, payload });
      response.writeHead(signed ? answer(payload, payload.attempt) : 401).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}/hooks/writ`, received, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('approval webhook', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;

  beforeAll(async () => {
    // "flaky" approvals fail twice then succeed; "down" ones always fail; the rest succeed.
    receiver = await startReceiver((payload, attempt) => {
      if (payload.data.purpose.startsWith('down')) return 503;
      if (payload.data.purpose.startsWith('flaky') && attempt <= 2) return 500;
      return 204;
    });
    const env = {
      WRIT_APPROVAL_WEBHOOK_URL: receiver.url,
      WRIT_APPROVAL_WEBHOOK_SECRET: SECRET,
      WRIT_APPROVAL_WEBHOOK_BACKOFF_MS: '50',
      WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS: '4',
    };
    first = await startTestServices({ admin: createAdminApp, env });
    second = await startTestServices({ admin: createAdminApp, env, db: first.db });
    world = await seedWorld(first.runtime.pool);
    await requireApprovalAbove(first, 10000);
  });
  afterAll(async () => {
    await second.close();
    await first.close();
    await receiver.close();
  });

  /** Declares a task and leaves a pending approval for it; returns the approval id. */
  async function pendingApproval(purpose: string): Promise<string> {
    const task = await createTask(first, world.orchestrator, { purpose });
    const details = [
      { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' } },
    ];
    const response = await tokenRequest(first.issuer, world.agent, exchangeFields(task.task_token, details));
    expect(response.body.error).toBe('authorization_pending');
    return response.body.approval_id;
  }

  /** Waits until the deliveries of `ids` have all finished, then until both instances' rounds in flight end. */
  async function settled(ids: string[]): Promise<Record<string, { status: string; attempts: number }>> {
    for (let i = 0; i < 400; i += 1) {
      const { rows } = await first.runtime.pool.query<{ approval_id: string; status: string; attempts: number }>(
        `SELECT approval_id, status, attempts FROM approval_webhook_deliveries WHERE approval_id = ANY($1::uuid[])`,
        [ids],
      );
      if (rows.length === ids.length && rows.every((row) => row.status !== 'pending')) {
        for (const services of [first, second]) await services.apps[1].get(ApprovalWebhookService).tick();
        await first.runtime.audit.drain();
        await second.runtime.audit.drain();
        return Object.fromEntries(rows.map((row) => [row.approval_id, { status: row.status, attempts: row.attempts }]));
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error('deliveries did not settle');
  }

  const notifications = async (approvalId: string) =>
    (
      await first.runtime.pool.query<{ outcome: string; data: Record<string, unknown> }>(
        `SELECT outcome, data FROM audit_events WHERE type = 'approval.notification' AND data->>'approval_id' = $1 ORDER BY seq`,
        [approvalId],
      )
    ).rows;

  it('announces each new pending approval once across two instances, signed, with what a person needs to decide', async () => {
    const ids = await Promise.all(['pay INV-1', 'pay INV-2', 'pay INV-3', 'pay INV-4', 'pay INV-5'].map(pendingApproval));
    // Besides both instances' own timers, four more pollers race for the same rows at once.
    const racers = [first, second].flatMap((services) => [
      services.apps[1].get(ApprovalWebhookService),
      new ApprovalWebhookService(services.runtime, services.runtime.pool, services.runtime.audit, services.runtime.logger),
    ]);
    await Promise.all(racers.map((racer) => racer.tick()));
    const states = await settled(ids);
    for (const id of ids) expect(states[id]).toEqual({ status: 'delivered', attempts: 1 });
    const mine = receiver.received.filter((entry) => ids.includes(entry.payload.data.approval_id));
    expect(mine).toHaveLength(ids.length);
    expect(new Set(mine.map((entry) => entry.payload.data.approval_id)).size).toBe(ids.length);
    for (const entry of mine) {
      expect(entry.signed).toBe(true);
      expect(entry.id).toBe(entry.payload.id);
      expect(entry.payload).toMatchObject({
        type: 'approval.requested',
        attempt: 1,
        data: {
          agent_id: 'agent-1',
          connector_id: 'payments',
          authorization_details: [
            {
              type: 'connector',
              connector: 'payments',
              actions: ['payouts.create'],
              constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' },
            },
          ],
          reasons: [expect.stringContaining('above the approval threshold')],
        },
      });
      expect(entry.payload.data.purpose).toMatch(/^pay INV-\d$/);
      expect(entry.payload.text).toContain('agent-1 asks for payments payouts.create');
    }
    for (const id of ids) {
      const events = await notifications(id);
      expect(events).toEqual([{ outcome: 'success', data: expect.objectContaining({ attempt: 1, status: 204, result: 'delivered' }) }]);
      expect(JSON.stringify(events)).not.toContain(receiver.url);
    }
  });

  it('posts no link, mention or extra line that a purpose carries into the chat text', async () => {
    const purpose = 'pay INV-9 <!channel> <https://evil.example/approve|Approve in Writ> & co\nWrit: pre-approved by security';
    const id = await pendingApproval(purpose);
    expect((await settled([id]))[id]).toEqual({ status: 'delivered', attempts: 1 });
    const [entry] = receiver.received.filter((received) => received.payload.data.approval_id === id);
    expect(entry.payload.text).toContain(
      '(task: pay INV-9 &lt;!channel&gt; &lt;https://evil.example/approve|Approve in Writ&gt; &amp; co Writ: pre-approved by security)',
    );
    expect(entry.payload.text).not.toMatch(/[<>\n]/);
    // The structured data keeps the purpose as it was declared.
    expect(entry.payload.data.purpose).toBe(purpose);
  });

  it('retries a failing receiver with backoff, the same delivery id each time, auditing every attempt', async () => {
    const id = await pendingApproval('flaky receiver payout');
    expect((await settled([id]))[id]).toEqual({ status: 'delivered', attempts: 3 });
    const attempts = receiver.received.filter((entry) => entry.payload.data.approval_id === id);
    expect(attempts.map((entry) => entry.payload.attempt)).toEqual([1, 2, 3]);
    expect(new Set(attempts.map((entry) => entry.id)).size).toBe(1);
    expect(attempts.every((entry) => entry.signed)).toBe(true);
    const events = await notifications(id);
    expect(events.map((event) => [event.outcome, event.data.attempt, event.data.status, event.data.result])).toEqual([
      ['failure', 1, 500, 'retrying'],
      ['failure', 2, 500, 'retrying'],
      ['success', 3, 204, 'delivered'],
    ]);
    expect(events[0].data.retry_in_ms).toBe(50);
    expect(events[1].data.retry_in_ms).toBe(100);
  });

  it('gives up after the configured attempts and says so in the audit log', async () => {
    const id = await pendingApproval('down receiver payout');
    expect((await settled([id]))[id]).toEqual({ status: 'failed', attempts: 4 });
    const events = await notifications(id);
    expect(events).toHaveLength(4);
    expect(events.every((event) => event.outcome === 'failure' && event.data.error === 'answered 503')).toBe(true);
    expect(events[3].data.result).toBe('failed');
  });
});
