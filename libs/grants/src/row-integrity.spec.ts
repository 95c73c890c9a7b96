import { MasterKey } from '@writ/keys';
import { canonicalJsonText } from '@writ/audit';
import {
  adminTokenIntegrityText,
  clientIntegrityText,
  type ConnectorIntegrityRow,
  RowIntegrity,
  TaskIntegrityFields,
  taskIntegrityText,
} from './row-integrity';

const task: TaskIntegrityFields = {
  id: '0B7C3B2E-3F1A-4C55-9A0E-1F2D3C4B5A69',
  agentId: 'agent-1',
  orchestratorId: 'orch-1',
  purpose: 'triage',
  allowed: [{ connector: 'github', actions: ['read'], limits: { calls: 5 } }],
  onBehalfOf: null,
  userIssuer: null,
  userSubject: null,
  metadata: { ticket: 'T-1', nested: { b: 1, a: [2, { d: 1, c: 2 }] } },
  taskTokenJti: 'jti-1',
  createdAt: new Date(1_764_000_000_000),
  expiresAt: new Date(1_764_003_600_000),
};

describe('canonical row text', () => {
  it('is independent of the order of jsonb members (as PostgreSQL may return them)', () => {
    const reordered = {
      ...task,
      allowed: [{ limits: { calls: 5 }, actions: ['read'], connector: 'github' }],
      metadata: { nested: { a: [2, { c: 2, d: 1 }], b: 1 }, ticket: 'T-1' },
    };
    expect(taskIntegrityText(reordered)).toBe(taskIntegrityText(task));
    expect(canonicalJsonText({ b: 1, a: { d: null, c: 'x' } })).toBe('{"a":{"c":"x","d":null},"b":1}');
  });

  it('keeps array order (it means something: an `allowed` entry index, allowed agents)', () => {
    const swapped = { ...task, allowed: [{ connector: 'b' }, { connector: 'a' }] };
    expect(taskIntegrityText(swapped)).not.toBe(taskIntegrityText({ ...task, allowed: [{ connector: 'a' }, { connector: 'b' }] }));
  });

  it('reads the id as uuid prints it (lower case)', () => {
    expect(taskIntegrityText({ ...task, id: task.id.toLowerCase() })).toBe(taskIntegrityText(task));
  });

  it('leaves no ambiguity between fields: moving text from one column to the next changes it', () => {
    const a = { ...task, agentId: 'agent-1', orchestratorId: 'x' };
    const b = { ...task, agentId: 'agent-', orchestratorId: '1x' };
    const c = { ...task, agentId: 'agent-1","x', orchestratorId: '' };
    expect(new Set([taskIntegrityText(a), taskIntegrityText(b), taskIntegrityText(c)]).size).toBe(3);
    // null and the string "null", an absent user and an empty one, are distinct.
    expect(taskIntegrityText({ ...task, onBehalfOf: 'null' })).not.toBe(taskIntegrityText(task));
    expect(taskIntegrityText({ ...task, userSubject: '' })).not.toBe(taskIntegrityText(task));
    // The user's issuer and subject cannot trade places.
    expect(taskIntegrityText({ ...task, userIssuer: 'i', userSubject: 's' })).not.toBe(taskIntegrityText({ ...task, userIssuer: 's', userSubject: 'i' }));
  });

  it('covers every authority-bearing column of a task', () => {
    const changes: Array<Partial<TaskIntegrityFields>> = [
      { id: '0b7c3b2e-3f1a-4c55-9a0e-1f2d3c4b5a6a' },
      { agentId: 'agent-2' },
      { orchestratorId: 'orch-2' },
      { purpose: 'other' },
      { allowed: [{ connector: 'github', actions: ['read', 'write'], limits: { calls: 5 } }] },
      { allowed: [{ connector: 'github', actions: ['read'], limits: { calls: 6 } }] },
      { onBehalfOf: 'someone' },
      { userIssuer: 'https://idp', userSubject: 'u' },
      { metadata: {} },
      { taskTokenJti: 'jti-2' },
      { createdAt: new Date(1_764_000_000_001) },
      { expiresAt: new Date(1_764_003_600_001) },
    ];
    const texts = new Set([taskIntegrityText(task), ...changes.map((change) => taskIntegrityText({ ...task, ...change }))]);
    expect(texts.size).toBe(changes.length + 1);
  });

  it("covers a client's id, status, keys and an orchestrator's allowed agents (in their order), not its name", () => {
    const agent = { id: 'agent-1', status: 'active', jwks: { keys: [{ kty: 'EC', x: '1', y: '2', crv: 'P-256', kid: 'k' }] } };
    const base = clientIntegrityText('agents', agent);
    expect(clientIntegrityText('agents', { ...agent, jwks: { keys: [{ kid: 'k', crv: 'P-256', y: '2', x: '1', kty: 'EC' }] } })).toBe(base);
    expect(clientIntegrityText('agents', { ...agent, status: 'suspended' })).not.toBe(base);
    expect(clientIntegrityText('agents', { ...agent, id: 'agent-2' })).not.toBe(base);
    expect(clientIntegrityText('agents', { ...agent, jwks: { keys: [] } })).not.toBe(base);
    const orchestrator = { ...agent, allowedAgents: ['a', 'b'] };
    expect(clientIntegrityText('orchestrators', orchestrator)).not.toBe(
      clientIntegrityText('orchestrators', { ...orchestrator, allowedAgents: ['a', 'b', 'c'] }),
    );
    expect(clientIntegrityText('orchestrators', { ...orchestrator, allowedAgents: ['*'] })).not.toBe(clientIntegrityText('orchestrators', orchestrator));
  });

  it("covers an admin token's id, role, hash and expiry (none distinct from any)", () => {
    const token = { id: '0B7C3B2E-3F1A-4C55-9A0E-1F2D3C4B5A69', role: 'viewer', tokenHash: 'ab'.repeat(32), expiresAt: null };
    const base = adminTokenIntegrityText(token);
    expect(adminTokenIntegrityText({ ...token, id: token.id.toLowerCase() })).toBe(base);
    for (const change of [{ role: 'admin' }, { tokenHash: 'cd'.repeat(32) }, { expiresAt: new Date(0) }, { id: '0b7c3b2e-3f1a-4c55-9a0e-1f2d3c4b5a6a' }]) {
      expect(adminTokenIntegrityText({ ...token, ...change })).not.toBe(base);
    }
  });

  it('refuses what JSON cannot hold', () => {
    expect(() => canonicalJsonText({ a: Number.NaN })).toThrow(TypeError);
    expect(() => taskIntegrityText({ ...task, expiresAt: new Date(Number.NaN) })).toThrow(TypeError);
  });
});

describe('RowIntegrity', () => {
  const refused: string[] = [];
  const integrity = new RowIntegrity(new MasterKey(Buffer.alloc(32, 9)), (table, id) => refused.push(`${table}:${id}`));

  it('verifies what it tagged; refuses, and reports by table and id, a changed row, a copied tag, or none', () => {
    const tag = integrity.tagTask(task);
    expect(integrity.verifyTask(task, tag)).toBe(true);
    expect(integrity.verifyTask({ ...task, metadata: { nested: { a: [2, { c: 2, d: 1 }], b: 1 }, ticket: 'T-1' } }, tag)).toBe(true);
    expect(refused).toEqual([]);
    expect(integrity.verifyTask({ ...task, allowed: [{ connector: 'github', actions: ['*'] }] }, tag)).toBe(false);
    expect(integrity.verifyTask({ ...task, agentId: 'agent-evil' }, tag)).toBe(false);
    expect(integrity.verifyTask(task, null)).toBe(false);
    expect(integrity.verifyTask({ ...task, expiresAt: new Date(Number.NaN) }, tag)).toBe(false);
    const agent = { id: 'agent-1', status: 'active', jwks: { keys: [] } };
    const agentTag = integrity.tagClient('agents', agent);
    expect(integrity.verifyClient('agents', agent, agentTag)).toBe(true);
    // An agent's tag on the orchestrator of the same id and contents: another table.
    expect(integrity.verifyClient('orchestrators', { ...agent, allowedAgents: [] }, agentTag)).toBe(false);
    expect(integrity.verifyClient('agents', { ...agent, id: 'agent-2' }, agentTag)).toBe(false);
    expect(refused).toEqual([`tasks:${task.id}`, `tasks:${task.id}`, `tasks:${task.id}`, `tasks:${task.id}`, 'orchestrators:agent-1', 'agents:agent-2']);
  });
});

describe('RowIntegrity of connectors', () => {
  const refused: string[] = [];
  const integrity = new RowIntegrity(new MasterKey(Buffer.alloc(32, 9)), (table, id) => refused.push(`${table}:${id}`));
  const operations = [
    { name: 'payouts.get', method: 'GET', path: '/v1/payouts/{id}', risk: 'read', constraints: { id: { in: 'path', field: 'id', op: 'eq' } } },
    { name: 'payouts.create', method: 'POST', path: '/v1/payouts', risk: 'write', constraints: {} },
  ];
  const row = (changes: Partial<ConnectorIntegrityRow> = {}): ConnectorIntegrityRow => ({
    id: 'payments',
    kind: 'http',
    base_url: 'https://payments.test',
    operations_text: JSON.stringify(operations),
    credential_type: 'bearer',
    integrity_tag: integrity.tagConnector({ id: 'payments', kind: 'http', baseUrl: 'https://payments.test', operations, credentialType: 'bearer' }),
    ...changes,
  });

  it('verifies the catalogue it tagged, whatever the order of its jsonb members', () => {
    const reordered = operations.map((operation) => Object.fromEntries(Object.entries(operation).reverse()));
    expect(integrity.verifyConnectorRow(row())).toBe(true);
    expect(integrity.verifyConnectorRow(row({ operations_text: JSON.stringify(reordered) }))).toBe(true);
    expect(refused).toEqual([]);
  });

  it("refuses a read action pointed at a write endpoint, another kind, base URL or credential type, a catalogue that is not JSON, or another table's tag", () => {
    const widened = operations.map((operation) => (operation.name === 'payouts.get' ? { ...operation, method: 'POST', path: '/v1/payouts' } : operation));
    const agentTag = integrity.tagClient('agents', { id: 'payments', status: 'active', jwks: {} });
    for (const changes of [
      { operations_text: JSON.stringify(widened) },
      { operations_text: JSON.stringify(operations.map((operation) => ({ ...operation, constraints: {} }))) },
      { kind: 'mcp' },
      { base_url: 'https://elsewhere.test' },
      { credential_type: 'basic' },
      { credential_type: null },
      { operations_text: '{not json' },
      { integrity_tag: null },
      { integrity_tag: agentTag },
    ]) {
      expect(integrity.verifyConnectorRow(row(changes))).toBe(false);
    }
    expect(refused).toEqual(Array.from({ length: 9 }, () => 'connectors:payments'));
  });
});

describe('RowIntegrity of identity providers, policies and approvals', () => {
  const refused: Array<[string, string]> = [];
  const integrity = new RowIntegrity(new MasterKey(Buffer.alloc(32, 9)), (table, id) => refused.push([table, id]));
  const provider = { issuer: 'https://idp.example', jwksUri: 'https://idp.example/jwks', audience: 'writ', assertingOrchestrators: ['orch-1'] };
  const policy = { version: 'v-1', bundle: Buffer.from('wasm bytes'), data: { writ: { config: { b: 1, a: 2 } } }, loadedAt: new Date(1_700_000_000_123) };
  const approval = {
    id: '7E1D3B2E-3F1A-4C55-9A0E-1F2D3C4B5A69',
    taskId: '0b7c3b2e-3f1a-4c55-9a0e-1f2d3c4b5a69',
    agentId: 'agent-1',
    connectorId: 'payments',
    authorizationDetails: [{ type: 'connector', connector: 'payments', actions: ['payouts.create'] }],
    policyVersion: 'v-1',
    status: 'approved',
    expiresAt: new Date(1_700_000_600_000),
    decidedAt: new Date(1_700_000_100_456),
    decidedBy: 'admin:root',
    dpopJkt: null,
  };

  it('verifies what it tagged (a policy whatever the order of its data members)', () => {
    expect(integrity.verifyIdentityProvider(provider, integrity.tagIdentityProvider(provider))).toBe(true);
    expect(integrity.verifyPolicy({ ...policy, data: { writ: { config: { a: 2, b: 1 } } } }, integrity.tagPolicy(policy))).toBe(true);
    expect(integrity.verifyApproval({ ...approval, id: approval.id.toLowerCase() }, integrity.tagApproval(approval))).toBe(true);
    expect(refused).toEqual([]);
  });

  it('refuses, and reports by table and id, a changed column, a copied tag or none', () => {
    const providerTag = integrity.tagIdentityProvider(provider);
    const policyTag = integrity.tagPolicy(policy);
    const approvalTag = integrity.tagApproval(approval);
    expect(integrity.verifyIdentityProvider({ ...provider, jwksUri: 'https://evil.example/jwks' }, providerTag)).toBe(false);
    expect(integrity.verifyIdentityProvider({ ...provider, assertingOrchestrators: ['orch-1', 'orch-2'] }, providerTag)).toBe(false);
    expect(integrity.verifyIdentityProvider({ ...provider, issuer: 'https://other.example' }, providerTag)).toBe(false);
    expect(integrity.verifyPolicy({ ...policy, bundle: Buffer.from('wasm bytez') }, policyTag)).toBe(false);
    expect(integrity.verifyPolicy({ ...policy, data: null }, policyTag)).toBe(false);
    expect(integrity.verifyPolicy({ ...policy, loadedAt: new Date(1_700_000_000_124) }, policyTag)).toBe(false);
    expect(integrity.verifyApproval({ ...approval, status: 'denied' }, approvalTag)).toBe(false);
    expect(integrity.verifyApproval({ ...approval, expiresAt: new Date(1_800_000_000_000) }, approvalTag)).toBe(false);
    expect(integrity.verifyApproval({ ...approval, id: '8e1d3b2e-3f1a-4c55-9a0e-1f2d3c4b5a69' }, approvalTag)).toBe(false);
    // Another table's tag over the same text, and no tag at all.
    expect(integrity.verifyApproval(approval, integrity.tagIdentityProvider(provider))).toBe(false);
    expect(integrity.verifyPolicy(policy, null)).toBe(false);
    expect(refused).toEqual([
      ['identity_providers', provider.issuer],
      ['identity_providers', provider.issuer],
      ['identity_providers', 'https://other.example'],
      ['policies', 'v-1'],
      ['policies', 'v-1'],
      ['policies', 'v-1'],
      ['approvals', approval.id],
      ['approvals', approval.id],
      ['approvals', '8e1d3b2e-3f1a-4c55-9a0e-1f2d3c4b5a69'],
      ['approvals', approval.id],
      ['policies', 'v-1'],
    ]);
  });

  it('covers the DPoP key an approval was asked with: added, removed or changed, it verifies no more', () => {
    refused.length = 0;
    const keyed = { ...approval, dpopJkt: 'jkt-of-the-agent' };
    const keyedTag = integrity.tagApproval(keyed);
    expect(integrity.verifyApproval(keyed, keyedTag)).toBe(true);
    expect(integrity.verifyApproval({ ...keyed, dpopJkt: 'jkt-of-a-thief' }, keyedTag)).toBe(false);
    expect(integrity.verifyApproval({ ...keyed, dpopJkt: null }, keyedTag)).toBe(false);
    expect(integrity.verifyApproval(keyed, integrity.tagApproval(approval))).toBe(false);
    expect(refused).toHaveLength(3);
  });
});
