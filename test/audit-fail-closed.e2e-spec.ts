import { startScratchPostgres, ScratchPostgres } from '@writ/testing';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { http, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/**
 * Fail closed: with PostgreSQL stopped mid-load, nothing is issued (503, readiness down);
 * when it returns, service resumes without a restart; and every token a client received has
 * its issuance event in the chain.
 */
describe('audit is fail-closed when PostgreSQL goes away mid-load', () => {
  let cluster: ScratchPostgres;
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    cluster = await startScratchPostgres();
    services = await startTestServices({ databaseUrl: cluster.url });
    world = await seedWorld(services.runtime.pool);
  }, 120_000);
  afterAll(async () => {
    await services?.close();
    await cluster?.destroy();
  });

  it('issues nothing while the database is down, and resumes by itself', async () => {
    const task = await createTask(services, world.orchestrator);
    const received: string[] = [];
    const statuses = new Map<number, number>();
    let running = true;
    const worker = async () => {
      while (running) {
        const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        if (response.status === 200) received.push(response.body.access_token);
        else if (response.status === 503) {
          expect(response.body).toMatchObject({ error: 'temporarily_unavailable' });
          expect(response.headers.get('cache-control')).toBe('no-store');
        } else throw new Error(`unexpected ${response.status}: ${response.text}`);
      }
    };
    const load = Promise.all([worker(), worker(), worker()]);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await cluster.stop();
    const issuedBefore = received.length;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(received.length - issuedBefore).toBeLessThanOrEqual(3); // at most the calls already committing
    const ready = await http(`${services.issuer}/health/ready`);
    expect(ready.status).toBe(503);
    const duringOutage = received.length;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(received.length).toBe(duringOutage);
    await cluster.start();
    const deadline = Date.now() + 20_000;
    while (received.length <= duringOutage && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
    running = false;
    await load;
    expect(received.length).toBeGreaterThan(duringOutage);
    expect(statuses.get(503)).toBeGreaterThan(0);
    expect((await http(`${services.issuer}/health/ready`)).status).toBe(200);

    // Every token a client holds has its issuance event in a valid chain.
    const jtis = received.map((token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).jti as string);
    const { rows } = await services.runtime.pool.query(`SELECT data->>'jti' AS jti FROM audit_events WHERE type = 'token.issued' AND task_id = $1`, [
      task.task_id,
    ]);
    const recorded = new Set(rows.map((row) => row.jti));
    expect(jtis.filter((jti) => !recorded.has(jti))).toEqual([]);
    const issuedRows = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(issuedRows.rows[0].n).toBe(recorded.size);
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
  }, 90_000);
});
