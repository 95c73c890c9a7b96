import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAuthorizationDetails } from '@writ/oauth';
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

describe('buildPolicyInput: the input documented in docs/policies.md', () => {
  const docs = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'policies.md'), 'utf8');
  const table = docs.slice(docs.indexOf('## The input document'), docs.indexOf('A real input'));
  /** The table row whose first cell names `field`. */
  const row = (field: string) => table.split('\n').find((line) => line.startsWith(`| \`${field}\``)) ?? '';
  const [entry] = parseAuthorizationDetails([
    { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { amount_max: 5 }, locations: ['http://gw/connectors/payments'] },
  ]);
  const input = buildPolicyInput(
    facts(
      { request: { grantType: 'urn:ietf:params:oauth:grant-type:token-exchange', authorizationDetails: [entry], resource: null, dpopJkt: null } },
      { allowed: [{ ...entry, limits: { calls: 3 } } as PolicyFacts['task']['allowed'][number]] },
    ),
  );

  it('names every field the server builds', () => {
    const paths: string[] = [];
    for (const [section, value] of Object.entries(input)) {
      if (section === 'connectors' || section === 'connections') {
        paths.push(section); // keyed by connector id
        continue;
      }
      for (const [key, inner] of Object.entries(value as Record<string, unknown>)) {
        if (key === 'history') for (const counter of Object.keys(inner as object)) paths.push(`${section}.${key}.${counter}`);
        else paths.push(`${section}.${key}`);
      }
    }
    const documented = [...table.matchAll(/^\| (.+?) \|/gm)].flatMap((match) => [...match[1].matchAll(/`([^`]+)`/g)].map((name) => name[1]));
    expect(paths.filter((path) => !documented.includes(path))).toEqual([]);
  });

  it('names every member of an authorization_details entry, as the agent may send it', () => {
    for (const field of ['request.authorization_details', 'task.allowed']) {
      expect(Object.keys(entry).filter((member) => !row(field).includes(member))).toEqual([]);
    }
    expect(row('task.allowed')).toContain('limits');
  });
});
