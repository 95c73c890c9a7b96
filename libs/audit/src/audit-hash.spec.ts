import { normaliseEventData } from './audit-canonical';
import { chainHash, chainHashOfCanonicalData } from './audit-hash';

describe('chainHashOfCanonicalData', () => {
  const body = {
    seq: 42,
    id: '6f1c2d1e-5b8a-4c3e-9f00-000000000001',
    occurred_at: '2030-01-01T00:00:00.000Z',
    type: 'token.issued',
    outcome: 'success' as const,
    actor_type: 'agent' as const,
    actor_id: 'agent-1',
    agent_id: 'agent-1',
    task_id: null,
    connector_id: 'payments',
  };

  it.each([
    ['plain data', { jti: 'x', max_uses: null, details: [{ a: 1 }] }],
    ['hostile data', { 'k\u0000': 'v\ud800', '\ud83d\ude00': [-0, 1e21, undefined], __proto__x: { b: 1, a: 2 } }],
    ['empty data', {}],
  ])('hashes exactly as chainHash over the normalised record (%s)', (_label, input) => {
    const data = normaliseEventData(input);
    expect(chainHashOfCanonicalData('prev', { ...body, data: data.value }, data.canonical)).toBe(chainHash('prev', { ...body, data: data.value }));
  });

  it('leaves out undefined members as canonicalize does', () => {
    const data = normaliseEventData({ a: 1 });
    const record = { ...body, actor_id: undefined as unknown as null, data: data.value };
    expect(chainHashOfCanonicalData('prev', record, data.canonical)).toBe(chainHash('prev', record));
  });
});
