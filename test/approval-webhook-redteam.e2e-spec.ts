import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { verifyWebhookSignature } from '../apps/admin/src/approvals/approval-webhook-signature';
import type { ApprovalWebhookPayload } from '../apps/admin/src/approvals/approval-webhook.service';
import { createTask, exchangeFields, payoutUpTo, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'writ-approval-webhook-redteam-secret-0123456789';

interface Seen {
  headers: IncomingMessage['headers'];
  body: string;
}

/** A loopback HTTP server that records what it receives and lets `handle` answer (or not). */
async function listen(handle: (seen: Seen, response: ServerResponse) => void): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const entry = { headers: request.headers, body: Buffer.concat(chunks).toString('utf8') };
      seen.push(entry);
      handle(entry, response);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The approval webhook attacked from the network side (a receiver that redirects, hangs or is
 * down) and by timing (an approval whose task ends before it is announced).
 */
describe('approval webhook under attack', () => {
  let services: TestServices;
  let world: World;
  let sink: Awaited<ReturnType<typeof listen>>;
  let receiver: Awaited<ReturnType<typeof listen>>;

  beforeAll(async () => {
    sink = await listen((_seen, response) => response.writeHead(204).end());
    receiver = await listen((seen, response) => {
      const payload = JSON.parse(seen.body) as ApprovalWebhookPayload;
      const purpose = payload.data.purpose;
      if (purpose.startsWith('redirect')) response.writeHead(307, { location: `${sink.url}/stolen` }).end();
      else if (purpose.startsWith('hang'))
        return; // never answers
      else if (purpose.startsWith('flaky') && payload.attempt === 1) response.writeHead(500).end();
      else response.writeHead(204).end();
    });
    services = await startTestServices({
      admin: createAdminApp,
      env: {
        WRIT_APPROVAL_WEBHOOK_URL: `${receiver.url}/hooks/writ`,
        WRIT_APPROVAL_WEBHOOK_SECRET: SECRET,
        WRIT_APPROVAL_WEBHOOK_BACKOFF_MS: '1500',
        WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS: '3',
      },
    });
    world = await seedWorld(services.runtime.pool);
    await requireApprovalAbove(services, 10000);
  });
  afterAll(async () => {
    await services.close();
    await receiver.close();
    await sink.close();
  });

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);

  async function pendingApproval(purpose: string): Promise<{ taskId: string; approvalId: string }> {
    const task = await createTask(services, world.orchestrator, { purpose });
    const answer = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(42000)));
    expect(answer.body.error).toBe('authorization_pending');
    return { taskId: task.task_id, approvalId: answer.body.approval_id };
  }

  /** Waits until `done` holds for the delivery row of `approvalId`. */
  async function delivery(approvalId: string, done: (row: { status: string; attempts: number }) => boolean) {
    for (let i = 0; i < 600; i += 1) {
      const { rows } = await services.runtime.pool.query<{ status: string; attempts: number; last_error: string | null }>(
        'SELECT status, attempts, last_error FROM approval_webhook_deliveries WHERE approval_id = $1',
        [approvalId],
      );
      if (rows[0] && done(rows[0])) return rows[0];
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error('the delivery never got there');
  }

  it('signs what it sends and carries no secret, token or user of the task', async () => {
    const { approvalId } = await pendingApproval('plain payout');
    await delivery(approvalId, (row) => row.status === 'delivered');
    const entry = receiver.seen.find((seen) => seen.body.includes(approvalId))!;
    expect(verifyWebhookSignature(Buffer.from(SECRET), entry.headers['writ-signature'] as string, entry.body)).toBe(true);
    // Replayed later, the same signed body is refused by a receiver that checks the timestamp.
    expect(verifyWebhookSignature(Buffer.from(SECRET), entry.headers['writ-signature'] as string, entry.body, Math.floor(Date.now() / 1000) + 301)).toBe(false);
    const payload = JSON.parse(entry.body) as ApprovalWebhookPayload;
    expect(Object.keys(payload.data).sort()).toEqual(
      [
        'agent_id',
        'approval_id',
        'authorization_details',
        'connector_id',
        'expires_at',
        'policy_version',
        'purpose',
        'reasons',
        'requested_at',
        'task_id',
      ].sort(),
    );
    expect(entry.body).not.toContain(SECRET);
    expect(entry.body).not.toContain(services.adminToken);
    expect(entry.body).not.toMatch(/eyJ[A-Za-z0-9_-]+\.eyJ/); // no JWT (the task token)
  });

  it('does not follow a redirect: the place it points to gets nothing', async () => {
    const { approvalId } = await pendingApproval('redirect payout');
    const row = await delivery(approvalId, (candidate) => candidate.attempts >= 1);
    expect(row).toMatchObject({ status: 'pending', last_error: 'answered 307' });
    expect(sink.seen).toEqual([]);
    expect((await admin('POST', `/v1/approvals/${approvalId}/deny`, {})).status).toBe(200);
    expect(await delivery(approvalId, (candidate) => candidate.status !== 'pending')).toMatchObject({ status: 'skipped', attempts: 1 });
    expect(sink.seen).toEqual([]);
  });

  it('gives up on a receiver that never answers after its deadline, and the approval is still decided as usual', async () => {
    const { approvalId } = await pendingApproval('hang payout');
    const started = Date.now();
    const row = await delivery(approvalId, (candidate) => candidate.attempts >= 1);
    expect(row).toMatchObject({ status: 'pending', last_error: 'timed out' });
    expect(Date.now() - started).toBeLessThan(14_000);
    expect((await admin('POST', `/v1/approvals/${approvalId}/approve`, {})).body.status).toBe('approved');
    expect(await delivery(approvalId, (candidate) => candidate.status !== 'pending')).toMatchObject({ status: 'skipped', attempts: 1 });
  }, 30_000);

  it('does not announce an approval whose task ended before its delivery: nobody can decide it any more', async () => {
    const { taskId, approvalId } = await pendingApproval('flaky payout');
    await delivery(approvalId, (row) => row.attempts >= 1);
    expect((await admin('POST', `/v1/tasks/${taskId}/revoke`, {})).status).toBe(200);
    expect((await admin('GET', `/v1/approvals/${approvalId}`)).body.status).toBe('expired');
    expect(await delivery(approvalId, (row) => row.status !== 'pending')).toMatchObject({ status: 'skipped', attempts: 1 });
    expect(receiver.seen.filter((seen) => seen.body.includes(approvalId))).toHaveLength(1);
  });
});

describe('approval webhook that is down', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    // A port nothing listens on.
    const closed = await listen(() => undefined);
    await closed.close();
    services = await startTestServices({
      admin: createAdminApp,
      env: { WRIT_APPROVAL_WEBHOOK_URL: `${closed.url}/hooks`, WRIT_APPROVAL_WEBHOOK_SECRET: SECRET, WRIT_APPROVAL_WEBHOOK_BACKOFF_MS: '50' },
    });
    world = await seedWorld(services.runtime.pool);
    await requireApprovalAbove(services, 10000);
  });
  afterAll(() => services.close());

  it('blocks neither the exchange nor the decision nor the redemption', async () => {
    const task = await createTask(services, world.orchestrator);
    const asked = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(42000)));
    expect(asked.body.error).toBe('authorization_pending');
    const id: string = asked.body.approval_id;
    for (let i = 0; i < 200; i += 1) {
      const { rows } = await services.runtime.pool.query<{ attempts: number }>('SELECT attempts FROM approval_webhook_deliveries WHERE approval_id = $1', [id]);
      if (rows[0]?.attempts >= 2) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const { rows } = await services.runtime.pool.query<{ last_error: string }>('SELECT last_error FROM approval_webhook_deliveries WHERE approval_id = $1', [
      id,
    ]);
    expect(rows[0].last_error).toBe('could not connect');
    expect((await sendJson('POST', `${services.adminUrl}/v1/approvals/${id}/approve`, {}, services.adminToken)).status).toBe(200);
    const granted = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(42000), { approval_id: id }));
    expect(granted.status).toBe(200);
  });
});
