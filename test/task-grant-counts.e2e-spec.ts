import { createTask, exchangeFields, seedWorld, tasksToken, World } from './support/grant-flow';
import { clientAuthFields } from '@writ/testing';
import { postForm, sendJson } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

/**
 * A task's `grants_issued` is a counter kept by a trigger on `access_tokens` (one lookup per
 * exchange, however many credentials the task has issued). Issuances racing on two instances
 * over one database, for two tasks at once, must each count exactly once, and the counter must
 * agree with the credentials actually recorded.
 */
describe('task grant counter across instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;

  beforeAll(async () => {
    first = await startTestServices();
    second = await startSecondInstance(first);
    world = await seedWorld(first.runtime.pool);
  });
  // Either instance's token endpoint, the assertion addressed to the shared issuer.
  const exchangeAt = async (instance: TestServices, fields: Record<string, string>) =>
    postForm(`${instance.authUrl}/oauth2/token`, { ...fields, ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)) });
  afterAll(async () => {
    await second.close();
    await first.close();
  });

  it('counts concurrent issuances on both instances exactly, per task', async () => {
    const tasks = [await createTask(first, world.orchestrator), await createTask(first, world.orchestrator)];
    const requests = Array.from({ length: 24 }, (_, index) => {
      const instance = index % 2 === 0 ? first : second;
      return exchangeAt(instance, exchangeFields(tasks[Math.floor(index / 2) % 2].task_token));
    });
    const responses = await Promise.all(requests);
    expect(responses.map((response) => response.status)).toEqual(Array(24).fill(200));
    const token = await tasksToken(first, world.orchestrator);
    for (const task of tasks) {
      const { rows } = await first.runtime.pool.query<{ tokens: number; counted: number }>(
        `SELECT (SELECT count(*)::int FROM access_tokens WHERE task_id = $1::uuid AND kind = 'connector') AS tokens,
                (SELECT issued FROM task_grant_counts WHERE task_id = $1::uuid) AS counted`,
        [task.task_id],
      );
      expect(rows[0]).toEqual({ tokens: 12, counted: 12 });
      const read = await sendJson('GET', `${first.issuer}/v1/tasks/${task.task_id}`, undefined, token);
      expect(read.body.history.grants_issued).toBe(12);
    }
  });

  it('counts a refused issuance nowhere', async () => {
    const task = await createTask(first, world.orchestrator);
    const refused = await exchangeAt(second, exchangeFields(task.task_token, [{ type: 'connector', connector: 'payments', actions: ['refunds.create'] }]));
    expect([400, 403]).toContain(refused.status);
    const { rows } = await first.runtime.pool.query(`SELECT issued FROM task_grant_counts WHERE task_id = $1::uuid`, [task.task_id]);
    expect(rows).toEqual([]);
    const read = await sendJson('GET', `${first.issuer}/v1/tasks/${task.task_id}`, undefined, await tasksToken(first, world.orchestrator));
    expect(read.body.history.grants_issued).toBe(0);
  });
});
