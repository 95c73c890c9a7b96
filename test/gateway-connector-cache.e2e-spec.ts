import type { INestApplication } from '@nestjs/common';
import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { ConnectorCache } from '../apps/connector-gateway/src/catalogue/connector-cache';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import type { GatewayConnector } from '@writ/grants';
import { createTask, exchangeFields, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, sendJson, tokenRequest } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const OLD_SECRET = 'sk_live_cache_old_51c9';
const NEW_SECRET = 'sk_live_cache_new_0b7e';
const READ = [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }];

/**
 * The gateway holds connectors in memory and remembers what never changes about a credential.
 * Two instances over one database: a connector changed through the admin API of the first is
 * what the very next call through the second uses, whether or not the second has been told
 * yet (its copy is dropped by a notification, and the spending statement checks the
 * connector version the call was checked against); a credential revoked on the first is
 * refused by the second with the same answer and audit event as without any memory.
 */
describe('gateway memory across instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let oldUpstream: MockUpstream;
  let newUpstream: MockUpstream;

  beforeAll(async () => {
    oldUpstream = await startPaymentsUpstream(OLD_SECRET);
    newUpstream = await startPaymentsUpstream(NEW_SECRET);
    first = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    second = await startSecondInstance(first, { gateway: createGatewayApp });
    world = await seedWorld(first.runtime.pool, oldUpstream.url);
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'payments', { type: 'bearer', token: OLD_SECRET });
  });
  afterAll(async () => {
    await second.close();
    await first.close();
    await oldUpstream.close();
    await newUpstream.close();
  });

  const secondGatewayApp = (): INestApplication => second.apps[second.apps.length - 1];
  const secondUrl = () => `http://127.0.0.1:${secondGatewayApp().getHttpServer().address().port as number}`;
  const secondCache = () => secondGatewayApp().get(ConnectorCache);
  const read = (token: string, id = 'po_cache') =>
    http(`${secondUrl()}/connectors/payments/v1/payouts/${id}`, { headers: { authorization: `Bearer ${token}` } });
  const readCredential = async () => {
    const task = await createTask(first, world.orchestrator);
    const response = await tokenRequest(first.issuer, world.agent, exchangeFields(task.task_token, READ));
    expect(response.status).toBe(200);
    return response.body.access_token as string;
  };
  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${first.adminUrl}${path}`, body, first.adminToken);
  const moveTo = async (upstream: MockUpstream, secret: string) => {
    const moved = await admin('PATCH', '/v1/connectors/payments', { base_url: upstream.url, credential: { type: 'bearer', token: secret } });
    expect(moved.status).toBe(200);
  };
  const heldUntil = async (held: boolean) => {
    // The notification is asynchronous: wait (bounded) for the second instance to have it.
    for (let tries = 0; tries < 200 && (secondCache().get('payments') !== undefined) !== held; tries += 1)
      await new Promise((resolve) => setTimeout(resolve, 10));
    return secondCache().get('payments');
  };

  it('listens for connector changes on every gateway instance', () => {
    expect(secondCache().listening).toBe(true);
    expect(first.apps[1].get(ConnectorCache).listening).toBe(true);
  });

  it('sends the next call on the other instance to the new upstream with the new credential, even before the notification arrives', async () => {
    const token = await readCredential();
    expect((await read(token)).status).toBe(404);
    expect((await read(token)).status).toBe(404);
    const stale = secondCache().get('payments');
    expect(stale?.baseUrl).toBe(oldUpstream.url);
    const [oldBefore, newBefore] = [oldUpstream.received.length, newUpstream.received.length];

    await moveTo(newUpstream, NEW_SECRET);
    // The change is notified: the second instance drops its copy.
    expect(await heldUntil(false)).toBeUndefined();
    // As if the notification had not arrived yet: the second instance still holds the old connector.
    secondCache().remember(stale as GatewayConnector, secondCache().mark());
    expect(secondCache().get('payments')?.baseUrl).toBe(oldUpstream.url);

    const response = await read(token, 'po_moved');
    expect(response.status).toBe(404);
    expect(oldUpstream.received.length).toBe(oldBefore);
    expect(newUpstream.received.length).toBe(newBefore + 1);
    expect(newUpstream.received[newBefore]).toMatchObject({ url: '/v1/payouts/po_moved', headers: { authorization: `Bearer ${NEW_SECRET}` } });
    // The stale copy was dropped where the call was spent, and the call was audited once, as allowed.
    expect(secondCache().get('payments')?.baseUrl).toBe(newUpstream.url);
    const { rows } = await first.runtime.pool.query<{ outcome: string }>(
      `SELECT outcome FROM audit_events WHERE type = 'gateway.call' AND data->>'path' = '/v1/payouts/po_moved'`,
    );
    expect(rows.map((row) => row.outcome)).toEqual(['success']);

    await moveTo(oldUpstream, OLD_SECRET);
  });

  it('applies a catalogue change made on one instance to the next call on the other', async () => {
    const token = await readCredential();
    expect((await read(token)).status).toBe(404);
    const held = await heldUntil(true);
    expect(held).toBeDefined();
    const operations = JSON.parse(held!.operationsText) as Array<{ name: string; path: string }>;
    // payouts.get moves: the credentials that grant it are revoked by the same change.
    const changed = operations.map((operation) => (operation.name === 'payouts.get' ? { ...operation, path: '/v2/payouts/{payout_id}' } : operation));
    const patched = await admin('PATCH', '/v1/connectors/payments', { operations: changed });
    expect(patched.status).toBe(200);
    secondCache().remember(held!, secondCache().mark());

    const before = oldUpstream.received.length;
    const refused = await read(token, 'po_after_change');
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_token');
    expect(oldUpstream.received.length).toBe(before);

    expect((await admin('PATCH', '/v1/connectors/payments', { operations })).status).toBe(200);
  });

  it('refuses on the other instance a credential revoked on the first, with the answer and event of a fresh read', async () => {
    const token = await readCredential();
    expect((await read(token)).status).toBe(404);
    expect((await read(token)).status).toBe(404);
    const revoked = await postForm(`${first.issuer}/oauth2/revoke`, { token, ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)) });
    expect(revoked.status).toBe(200);

    const before = oldUpstream.received.length;
    const refused = await read(token, 'po_after_revocation');
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_token');
    expect(oldUpstream.received.length).toBe(before);
    const { rows } = await first.runtime.pool.query<{ outcome: string; reason: string }>(
      `SELECT outcome, data->>'reason' AS reason FROM audit_events WHERE type = 'gateway.call' AND data->>'path' = '/v1/payouts/po_after_revocation'`,
    );
    expect(rows).toEqual([{ outcome: 'denied', reason: 'revoked' }]);
  });
});
