import { insertTaskRow, rowIntegrityOf } from '@writ/testing';
import { ExchangeContextRepository } from '../apps/authorization-server/src/exchange/exchange-context.repository';
import { seedAgent, seedOrchestrator } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

/**
 * The token exchange remembers, per task, the row as it was when its integrity tag verified, so
 * that a task read again unchanged is not verified again. A row is what its orchestrator
 * declared (up to the Tasks API's 64 KiB body): one orchestrator creating many large tasks, and
 * its agent presenting each once, must not make every instance hold them all.
 */
describe('task integrity memo of the token exchange', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices();
    await seedAgent(services.runtime.pool, 'agent-memo');
    await seedOrchestrator(services.runtime.pool, 'orch-memo', ['agent-memo']);
  });
  afterAll(async () => {
    await services.close();
  });

  it('holds a bounded number of characters, whatever the size of the tasks read', async () => {
    const pool = services.runtime.pool;
    const integrity = rowIntegrityOf(pool);
    // 400 tasks of ~60 000 characters each: 24 million characters read.
    const ids: string[] = [];
    for (let index = 0; index < 400; index += 1) {
      ids.push(
        await insertTaskRow(pool, integrity, {
          agentId: 'agent-memo',
          orchestratorId: 'orch-memo',
          allowed: [{ type: 'connector', connector: 'payments', actions: ['payouts.get'], note: `${index}`.padEnd(60_000, 'x') }],
        }),
      );
    }
    const repository = services.apps[0].get(ExchangeContextRepository);
    for (let start = 0; start < ids.length; start += 100) {
      const tasks = await Promise.all(ids.slice(start, start + 100).map((id) => repository.task(id)));
      expect(tasks.every((task) => task !== undefined)).toBe(true);
    }
    const memo = (repository as unknown as { verifiedTasks: Map<string, string> }).verifiedTasks;
    const chars = [...memo.values()].reduce((sum, seen) => sum + seen.length, 0);
    expect(memo.size).toBeGreaterThan(0);
    expect(chars).toBeLessThanOrEqual(16 * 1024 * 1024 + 70_000);
  });
});
