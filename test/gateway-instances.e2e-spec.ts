import { createTask, exchangeFields, PAYOUT_REQUEST, tasksToken, World } from './support/grant-flow';
import { MockUpstream } from './support/mock-upstreams';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { TestServices } from './support/test-services';
import { startTwoGateways, TwoGateways } from './support/two-gateways';

const SECRET = 'sk_live_instances_6c1e';
const PAYOUT = { destination: 'acct_1', amount: 42000, currency: 'usd' };

/**
 * Two gateway instances behind one `WRIT_GATEWAY_URL`, over one database: a one-use credential
 * buys one call across both, and a revocation through one authorization server is effective
 * on the other gateway before the revoking call returns.
 */
describe('connector gateway across instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let upstream: MockUpstream;

  let deployment: TwoGateways;

  beforeAll(async () => {
    deployment = await startTwoGateways(SECRET);
    ({ first, second, world, upstream } = deployment);
  });
  afterAll(() => deployment.close());

  // The second instance's gateway listens on its own port; both accept the shared audience.
  const secondGateway = () => second.apps[second.apps.length - 1].getHttpServer().address().port as number;
  const pay = (base: string, token: string) =>
    http(`${base}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(PAYOUT),
    });
  const payoutCredential = async (taskToken: string) => {
    const response = await tokenRequest(first.issuer, world.agent, exchangeFields(taskToken, PAYOUT_REQUEST));
    expect(response.status).toBe(200);
    return response.body.access_token as string;
  };

  it('spends a one-use credential once across both instances, even concurrently', async () => {
    const task = await createTask(first, world.orchestrator);
    const secondUrl = `http://127.0.0.1:${secondGateway()}`;
    const token = await payoutCredential(task.task_token);
    expect((await pay(secondUrl, token)).status).toBe(201);
    expect((await pay(first.gatewayUrl, token)).status).toBe(401);

    const before = upstream.received.length;
    const racing = await payoutCredential(task.task_token);
    const results = await Promise.all([0, 1, 2, 3].map((n) => pay(n % 2 ? secondUrl : first.gatewayUrl, racing)));
    expect(results.map((result) => result.status).sort()).toEqual([201, 401, 401, 401]);
    expect(upstream.received.length).toBe(before + 1);
  });

  it('forwards a one-use credential fired 20 times at once on both instances exactly once, with one allowed audit event', async () => {
    const task = await createTask(first, world.orchestrator);
    const secondUrl = `http://127.0.0.1:${secondGateway()}`;
    const token = await payoutCredential(task.task_token);
    const jti = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')).jti as string;
    const before = upstream.received.length;
    const results = await Promise.all(Array.from({ length: 20 }, (_unused, n) => pay(n % 2 ? secondUrl : first.gatewayUrl, token)));
    const statuses = results.map((result) => result.status);
    expect(statuses.filter((status) => status === 201)).toHaveLength(1);
    expect(statuses.filter((status) => status === 401)).toHaveLength(19);
    expect(upstream.received.length).toBe(before + 1);
    const { rows } = await first.runtime.pool.query<{ outcome: string; n: string }>(
      `SELECT outcome, count(*) AS n FROM audit_events WHERE type = 'gateway.call' AND data->>'jti' = $1 GROUP BY outcome`,
      [jti],
    );
    expect(Object.fromEntries(rows.map((row) => [row.outcome, Number(row.n)]))).toEqual({ success: 1, denied: 19 });
  });

  it('refuses on the other instance a credential whose task was just completed', async () => {
    const task = await createTask(first, world.orchestrator);
    const read = await tokenRequest(
      first.issuer,
      world.agent,
      exchangeFields(task.task_token, [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }]),
    );
    const token = read.body.access_token as string;
    const secondUrl = `http://127.0.0.1:${secondGateway()}`;
    const paid = await pay(first.gatewayUrl, await payoutCredential(task.task_token));
    const path = `/connectors/payments/v1/payouts/${paid.body.id}`;
    expect((await http(`${secondUrl}${path}`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const completed = await sendJson('POST', `${first.issuer}/v1/tasks/${task.task_id}/complete`, undefined, await tasksToken(first, world.orchestrator));
    expect(completed.status).toBe(200);
    const after = await http(`${secondUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
    expect(after.status).toBe(401);
    expect(after.body.error).toBe('invalid_token');
  });
});
