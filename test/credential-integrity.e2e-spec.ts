import { Pool } from 'pg';
import { clientAuthFields } from '@writ/testing';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { decodeJwt } from 'jose';
import { createTask, exchangeFields, seedWorld, World, payoutEntry as sharedPayoutEntry } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, tokenRequest } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_cred_integrity_7c1e';
const payoutEntry = (amountMax: number, limits?: unknown) => sharedPayoutEntry(amountMax, limits !== undefined ? { limits } : {});

/**
 * A database administrator (no master key, no signing key) edits what the gateway reads about a
 * credential and its task's budgets: `access_tokens.max_uses`, `budget_entries`, and
 * `task_budgets.maximum` are not tagged. The gateway bounds them by what the token signs and by
 * the limits of the verified task row, so the edits buy nothing (docs/security.md).
 */
describe('credential and budget rows edited by a database administrator', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let upstream: MockUpstream;
  /** The cluster's superuser: what a database administrator can do. */
  let dba: Pool;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    first = await startTestServices({ gateway: createGatewayApp });
    second = await startSecondInstance(first, { gateway: createGatewayApp });
    world = await seedWorld(first.runtime.pool, upstream.url);
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    dba = new Pool({ connectionString: first.db.url, max: 2 });
  });
  afterAll(async () => {
    await dba.end();
    await second.close();
    await first.close();
    await upstream.close();
  });

  const secondGateway = () => `http://127.0.0.1:${second.apps[second.apps.length - 1].getHttpServer().address().port}`;
  const gatewayFor = (n: number) => (n % 2 ? secondGateway() : first.gatewayUrl);
  const credential = async (taskToken: string, details: unknown) => {
    const response = await tokenRequest(first.issuer, world.agent, exchangeFields(taskToken, details));
    expect(response.status).toBe(200);
    return response.body.access_token as string;
  };
  const pay = (base: string, token: string, amount: number) =>
    http(`${base}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount, currency: 'usd' }),
    });
  const payouts = () => upstream.received.filter((request) => request.method === 'POST').length;
  const sql = (text: string, values: unknown[]) => dba.query(text, values);

  it('signs the use limit and the budget charge into the credential', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500, { calls: 3 })] });
    const claims = decodeJwt(await credential(task.task_token, [payoutEntry(500)]));
    expect(claims).toMatchObject({ max_uses: 1, budget_entries: [0] });
    // A read credential has neither (no limit, no budget): its row can only narrow it.
    const read = await createTask(first, world.orchestrator, { allowed: [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }] });
    const readClaims = decodeJwt(await credential(read.task_token, [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }]));
    expect(readClaims).not.toHaveProperty('max_uses');
    expect(readClaims).not.toHaveProperty('budget_entries');
  });

  it.each([
    ['raised', '1000'],
    ['cleared', 'NULL'],
  ])('spends a one-use credential once, on both gateways in parallel, when its max_uses is %s by hand', async (_how, value) => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500)] });
    const token = await credential(task.task_token, [payoutEntry(500)]);
    await sql(`UPDATE access_tokens SET max_uses = ${value} WHERE jti = $1`, [decodeJwt(token).jti]);
    const before = payouts();
    const results = await Promise.all(Array.from({ length: 6 }, (_, n) => pay(gatewayFor(n), token, 100)));
    expect(results.map((result) => result.status).sort()).toEqual([201, 401, 401, 401, 401, 401]);
    expect(payouts()).toBe(before + 1);
    // Used once, on a gateway that remembers it, then once more on each: still refused.
    for (let n = 0; n < 2; n += 1) expect((await pay(gatewayFor(n), token, 100)).status).toBe(401);
    expect(payouts()).toBe(before + 1);
  });

  it('introspects a spent one-use credential as inactive though its max_uses was raised by hand', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500)] });
    const token = await credential(task.task_token, [payoutEntry(500)]);
    expect((await pay(first.gatewayUrl, token, 100)).status).toBe(201);
    await sql(`UPDATE access_tokens SET max_uses = 1000, authorization_details = $2 WHERE jti = $1`, [
      decodeJwt(token).jti,
      JSON.stringify([payoutEntry(1_000_000)]),
    ]);
    const introspect = async () =>
      (
        await postForm(`${first.issuer}/oauth2/introspect`, {
          token,
          ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, first.issuer)),
        })
      ).body;
    expect(await introspect()).toEqual({ active: false });
    // Before it was spent, introspection shows what the token signs, not the row.
    const fresh = await credential(task.task_token, [payoutEntry(500)]);
    await sql(`UPDATE access_tokens SET max_uses = 1000, authorization_details = $2 WHERE jti = $1`, [
      decodeJwt(fresh).jti,
      JSON.stringify([payoutEntry(1_000_000)]),
    ]);
    const shown = (
      await postForm(`${first.issuer}/oauth2/introspect`, {
        token: fresh,
        ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, first.issuer)),
      })
    ).body;
    expect(shown).toMatchObject({ active: true, uses_remaining: 1, authorization_details: [payoutEntry(500)] });
  });

  it('charges a credential to its task budget though its budget_entries were cleared by hand', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500, { calls: 2 })] });
    const tokens = await Promise.all(Array.from({ length: 6 }, () => credential(task.task_token, [payoutEntry(500)])));
    await sql(`UPDATE access_tokens SET budget_entries = NULL WHERE task_id = $1`, [task.task_id]);
    const before = payouts();
    const results = await Promise.all(tokens.map((token, n) => pay(gatewayFor(n), token, 100)));
    expect(results.filter((result) => result.status === 201)).toHaveLength(2);
    for (const result of results.filter((result) => result.status !== 201)) expect(result.body).toMatchObject({ rule: 'limit:calls' });
    expect(payouts()).toBe(before + 2);
  });

  it('holds the declared limit when task_budgets.maximum is raised by hand, across both gateways in parallel', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500, { calls: 5, sum: { amount_max: 300 } })] });
    const tokens = await Promise.all(Array.from({ length: 8 }, () => credential(task.task_token, [payoutEntry(500)])));
    await sql(`UPDATE task_budgets SET maximum = 1000000 WHERE task_id = $1`, [task.task_id]);
    const before = payouts();
    const results = await Promise.all(tokens.map((token, n) => pay(gatewayFor(n), token, 100)));
    expect(results.filter((result) => result.status === 201)).toHaveLength(3);
    for (const result of results.filter((result) => result.status !== 201)) {
      expect(result.status).toBe(403);
      expect(result.body).toMatchObject({ error: 'insufficient_scope', rule: 'limit:sum:amount_max' });
    }
    expect(payouts()).toBe(before + 3);
    const { rows } = await sql(`SELECT rule, used::float8 AS used FROM task_budgets WHERE task_id = $1 ORDER BY rule`, [task.task_id]);
    expect(rows).toEqual([
      { rule: 'calls', used: 3 },
      { rule: 'sum:amount_max', used: 300 },
    ]);
  });

  it('refuses a credential past its signed exp though its row expiry was extended by hand', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500)] });
    const claims = decodeJwt(await credential(task.task_token, [payoutEntry(500)]));
    await sql(`UPDATE access_tokens SET expires_at = now() + interval '30 days' WHERE jti = $1`, [claims.jti]);
    // The same credential as it is once its exp has passed (signed by Writ: the row names it).
    const now = Math.floor(Date.now() / 1000);
    const { token: expired } = await first.runtime.signingKeys.sign({ ...claims, iat: now - 600, exp: now - 300 }, { typ: 'at+jwt' });
    const response = await pay(first.gatewayUrl, expired, 100);
    expect(response.status).toBe(401);
    expect(response.body.error_description).toBe('the access token has expired');
  });

  it('keeps the row values for a credential issued before the claims existed (no max_uses, no budget_entries)', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500, { calls: 5 })] });
    const { max_uses: _uses, budget_entries: _entries, ...claims } = decodeJwt(await credential(task.task_token, [payoutEntry(500)]));
    const { token: old } = await first.runtime.signingKeys.sign(claims, { typ: 'at+jwt' });
    const before = payouts();
    const results = await Promise.all(Array.from({ length: 4 }, (_, n) => pay(gatewayFor(n), old, 100)));
    // Its row's one use and its row's budget entry, as before the change (the refused calls' reservations given back).
    expect(results.map((result) => result.status).sort()).toEqual([201, 401, 401, 401]);
    expect(payouts()).toBe(before + 1);
    const { rows } = await sql(`SELECT used::float8 AS used FROM task_budgets WHERE task_id = $1`, [task.task_id]);
    expect(rows).toEqual([{ used: 1 }]);
  });

  it('refuses every call when a declared budget row is deleted by hand (its limit does not go with it)', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(500, { calls: 1, sum: { amount_max: 1000 } })] });
    const tokens = await Promise.all(Array.from({ length: 3 }, () => credential(task.task_token, [payoutEntry(500)])));
    await sql(`DELETE FROM task_budgets WHERE task_id = $1 AND rule = 'calls'`, [task.task_id]);
    const before = payouts();
    const results = await Promise.all(tokens.map((token, n) => pay(gatewayFor(n), token, 100)));
    for (const result of results) expect(result.status).toBe(403);
    expect(payouts()).toBe(before);
  });
});
