import { OrchestratorEntity } from './orchestrator.entity';
import { rowOf } from './row-of';

describe('rowOf', () => {
  it('names every property of a loaded entity as its snake_case column, values untouched', () => {
    const createdAt = new Date('2026-01-01T00:00:00.000Z');
    const entity = Object.assign(new OrchestratorEntity(), {
      id: 'orch-1',
      name: 'o',
      description: null,
      status: 'active' as const,
      jwks: { keys: [] },
      allowedAgents: ['*'],
      createdAt,
      updatedAt: createdAt,
    });
    expect(rowOf(entity)).toEqual({
      id: 'orch-1',
      name: 'o',
      description: null,
      status: 'active',
      jwks: { keys: [] },
      allowed_agents: ['*'],
      created_at: createdAt,
      updated_at: createdAt,
    });
  });

  it('leaves what was not selected undefined', () => {
    const row = rowOf(Object.assign(new OrchestratorEntity(), { id: 'orch-1' }));
    expect(row.id).toBe('orch-1');
    expect(row.allowed_agents).toBeUndefined();
  });
});
