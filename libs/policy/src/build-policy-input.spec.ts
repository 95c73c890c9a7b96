import { buildPolicyInput, PolicyFacts } from './build-policy-input';

const facts = (overrides: Partial<PolicyFacts> = {}, task: Partial<PolicyFacts['task']> = {}): PolicyFacts => ({
  request: { grantType: 'urn:ietf:params:oauth:grant-type:token-exchange', authorizationDetails: [], resource: null, dpopJkt: null },
  agent: { id: 'agent-1', name: 'Agent', status: 'active' },
  task: {
    id: 't',
    agentId: 'agent-1',
    orchestratorId: 'orch-1',
    purpose: 'p',
    status: 'active',
    allowed: [],
    createdAt: new Date('2026-11-28T10:00:00Z'),
    expiresAt: new Date('2026-11-28T10:15:00Z'),
    onBehalfOf: 'label',
    metadata: {},
    grantsIssued: 0,
    refusals: 0,
    outOfPurposeRequests: 0,
    ...task,
  },
  connectors: [],
  now: new Date('2026-11-28T10:01:00Z'),
  ...overrides,
});

describe('buildPolicyInput: users and connections', () => {
  it('gives the verified user and the connections of the requested connectors', () => {
    const input = buildPolicyInput(
      facts(
        { connections: { github: { status: 'broken', scopes: ['repo'] }, chat: null } },
        { user: { issuer: 'https://login.example.com', subject: 'user-42' } },
      ),
    );
    expect(input.task.user).toEqual({ iss: 'https://login.example.com', sub: 'user-42' });
    expect(input.task.on_behalf_of).toBe('label');
    expect(input.connections).toEqual({ github: { status: 'broken', scopes: ['repo'] }, chat: null });
  });

  it('says null and {} when there is no verified user and no connected-accounts connector', () => {
    const input = buildPolicyInput(facts());
    expect(input.task.user).toBeNull();
    expect(input.connections).toEqual({});
  });
});
