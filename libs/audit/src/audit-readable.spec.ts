import { MAX_READABLE_DEPTH, nestsDeeperThan, readableRecord } from './audit-readable';
import type { AuditRecord } from './audit-event';

const nested = (levels: number): unknown => JSON.parse('{"d":'.repeat(levels - 1) + '{}' + '}'.repeat(levels - 1));

describe('readable audit records', () => {
  it('measures nesting without recursion, arrays and objects alike', () => {
    expect(nestsDeeperThan(nested(3), 3)).toBe(false);
    expect(nestsDeeperThan(nested(4), 3)).toBe(true);
    expect(nestsDeeperThan([[['x']]], 3)).toBe(false);
    expect(nestsDeeperThan([[[[]]]], 3)).toBe(true);
    expect(nestsDeeperThan(nested(50_000), MAX_READABLE_DEPTH)).toBe(true);
    expect(nestsDeeperThan('text', 0)).toBe(false);
  });

  it('replaces only data nested past the limit, and keeps everything else of the event', () => {
    const record = { seq: 7, id: 'e', type: 't', data: { a: [1, { b: 2 }] } } as unknown as AuditRecord;
    expect(readableRecord(record)).toBe(record);
    const deep = { ...record, data: nested(MAX_READABLE_DEPTH + 1) } as AuditRecord;
    expect(readableRecord(deep)).toEqual({ ...record, data: { unreadable: expect.stringContaining('not written by Writ') } });
  });
});
