import { REVOKED_JTIS_PER_EVENT, taskEndEvents, tokenRevokedEvents } from './credential-revoker';

const jtis = (n: number) => Array.from({ length: n }, (_, index) => `jti-${index}`);
const scope = { actor: { type: 'admin' as const, id: 'adm-1' }, agentId: 'agent-1' };

describe('tokenRevokedEvents', () => {
  it('writes nothing for no credential, and one event without parts up to the limit', () => {
    expect(tokenRevokedEvents(scope, [], 'agent suspended')).toEqual([]);
    expect(tokenRevokedEvents(scope, jtis(1), 'agent suspended')).toEqual([
      { ...scope, type: 'token.revoked', outcome: 'success', data: { reason: 'agent suspended', jtis: ['jti-0'], count: 1 } },
    ]);
    const full = tokenRevokedEvents(scope, jtis(REVOKED_JTIS_PER_EVENT), 'x');
    expect(full).toHaveLength(1);
    expect(full[0].data).toEqual({ reason: 'x', jtis: jtis(REVOKED_JTIS_PER_EVENT), count: REVOKED_JTIS_PER_EVENT });
  });

  it('splits more into parts of at most the limit, each with the total, every jti in exactly one', () => {
    const all = jtis(2 * REVOKED_JTIS_PER_EVENT + 1);
    const events = tokenRevokedEvents(scope, all, 'connector deleted');
    expect(events.map((event) => event.data)).toEqual([
      { reason: 'connector deleted', jtis: all.slice(0, REVOKED_JTIS_PER_EVENT), count: all.length, part: 1, parts: 3 },
      { reason: 'connector deleted', jtis: all.slice(REVOKED_JTIS_PER_EVENT, 2 * REVOKED_JTIS_PER_EVENT), count: all.length, part: 2, parts: 3 },
      { reason: 'connector deleted', jtis: all.slice(2 * REVOKED_JTIS_PER_EVENT), count: all.length, part: 3, parts: 3 },
    ]);
    expect(events.every((event) => event.type === 'token.revoked' && event.actor === scope.actor && event.agentId === 'agent-1')).toBe(true);
  });
});

describe('taskEndEvents', () => {
  const orchestrator = { type: 'orchestrator' as const, id: 'orch-1' };

  it('records the end asked for, by who asked', () => {
    const events = taskEndEvents('t-1', 'completed', orchestrator, { agentId: 'agent-1', status: 'completed', reason: 'done', jtis: ['j1'] });
    expect(events).toEqual([
      { type: 'task.completed', outcome: 'success', actor: orchestrator, agentId: 'agent-1', taskId: 't-1', data: { status: 'completed', reason: 'done' } },
      {
        type: 'token.revoked',
        outcome: 'success',
        actor: orchestrator,
        agentId: 'agent-1',
        taskId: 't-1',
        data: { reason: 'task completed', jtis: ['j1'], count: 1 },
      },
    ]);
  });

  it('records an end found past the deadline as the expiry, naming what was asked and by whom', () => {
    const events = taskEndEvents('t-1', 'completed', orchestrator, { agentId: 'agent-1', status: 'expired', reason: 'deadline passed', jtis: [] });
    expect(events).toEqual([
      {
        type: 'task.expired',
        outcome: 'success',
        actor: { type: 'system', id: 'task-deadline' },
        agentId: 'agent-1',
        taskId: 't-1',
        data: { status: 'expired', reason: 'deadline passed', requested_status: 'completed', requested_by: orchestrator },
      },
    ]);
  });
});
