import { clientAuthFields, startScratchPostgres, ScratchPostgres } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { postForm, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/**
 * Revocation and task ends while PostgreSQL is stopped: each is `503` with `Retry-After`, never a
 * `200` for a revocation that did not commit; once the database is back, nothing was revoked
 * behind the client's back, and the same request revokes.
 */
describe('revocation while PostgreSQL is down', () => {
  let cluster: ScratchPostgres;
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    cluster = await startScratchPostgres();
    services = await startTestServices({ databaseUrl: cluster.url, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
  }, 120_000);
  afterAll(async () => {
    await services?.close();
    await cluster?.destroy();
  });

  it('answers every revocation and end 503 with Retry-After while it is down, and revokes once it is back', async () => {
    const task = await createTask(services, world.orchestrator);
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    const token = exchanged.body.access_token as string;
    const bearer = await tasksToken(services, world.orchestrator);
    const revoke = async (value: string) =>
      postForm(`${services.issuer}/oauth2/revoke`, { token: value, ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) });

    await cluster.stop();
    let answers: TestResponse[];
    try {
      answers = [
        await revoke(token),
        await revoke(task.task_token),
        await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/complete`, undefined, bearer),
        await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken),
      ];
    } finally {
      await cluster.start();
    }
    for (const answer of answers) {
      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).not.toBeNull();
    }
    // Back: nothing changed behind the answers.
    const jti = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).jti as string;
    const state = async () =>
      (
        await services.runtime.pool.query<{ revoked: boolean; status: string }>(
          'SELECT t.revoked_at IS NOT NULL AS revoked, k.status FROM access_tokens t JOIN tasks k ON k.id = t.task_id WHERE t.jti = $1',
          [jti],
        )
      ).rows[0];
    let current = await state().catch(() => undefined);
    for (let attempt = 0; attempt < 100 && !current; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      current = await state().catch(() => undefined);
    }
    expect(current).toEqual({ revoked: false, status: 'active' });
    let again = await revoke(token);
    for (let attempt = 0; attempt < 100 && again.status === 503; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      again = await revoke(token);
    }
    expect(again.status).toBe(200);
    expect(await state()).toEqual({ revoked: true, status: 'active' });
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
  }, 90_000);
});
