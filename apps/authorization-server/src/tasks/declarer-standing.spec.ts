import type { DeclarerStanding } from '@writ/grants';
import { InvalidTokenError } from '@writ/oauth';
import { ValidationFailedError } from '@writ/platform';
import { agentFieldErrors, declarerRefusal } from './declarer-standing';

describe('declarer standing at commit', () => {
  const standing = (overrides: Partial<DeclarerStanding> = {}): DeclarerStanding => ({
    orchestratorStatus: 'active',
    allowedAgents: ['agent-1'],
    token: 'live',
    agentStatus: 'active',
    ...overrides,
  });

  it('lets a declaration whose checks all still hold commit', () => {
    expect(declarerRefusal(standing(), 'agent-1')).toBeUndefined();
    expect(declarerRefusal(standing({ allowedAgents: ['*'] }), 'agent-9')).toBeUndefined();
  });

  it.each([
    ['a suspended orchestrator', { orchestratorStatus: 'suspended' as const }, 'the access token has been revoked'],
    ['a deleted orchestrator', { orchestratorStatus: null, allowedAgents: [] }, 'the access token has been revoked'],
    ['a revoked token', { token: 'revoked' as const }, 'the access token has been revoked'],
    ['a token gone from the table', { token: 'unknown' as const }, 'the access token has been revoked'],
    ['a token past its expiry', { token: 'expired' as const }, 'the access token is invalid or expired'],
  ])('refuses %s as the guard would: 401 invalid_token', (_, overrides, description) => {
    const refusal = declarerRefusal(standing(overrides), 'agent-1');
    expect(refusal).toBeInstanceOf(InvalidTokenError);
    expect((refusal as InvalidTokenError).description).toBe(description);
  });

  it('puts the token before the agent, as the guard runs before the create', () => {
    expect(declarerRefusal(standing({ orchestratorStatus: 'suspended', agentStatus: null }), 'agent-1')).toBeInstanceOf(InvalidTokenError);
  });

  it.each([
    ['left allowed_agents', { allowedAgents: ['agent-2'] }, 'this orchestrator may not create tasks for that agent'],
    ['was suspended', { agentStatus: 'suspended' as const }, 'the agent is suspended'],
    ['was deleted', { agentStatus: null }, 'no such agent'],
  ])('refuses an agent that %s as the create would: 400 naming agent_id', (_, overrides, message) => {
    const refusal = declarerRefusal(standing(overrides), 'agent-1');
    expect(refusal).toBeInstanceOf(ValidationFailedError);
    expect((refusal as ValidationFailedError).fields).toEqual([{ field: 'agent_id', message }]);
  });

  it('names every agent problem at once', () => {
    expect(agentFieldErrors(['agent-2'], 'agent-1', null).map((field) => field.message)).toEqual([
      'this orchestrator may not create tasks for that agent',
      'no such agent',
    ]);
  });
});
