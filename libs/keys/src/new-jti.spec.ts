import { newJti } from './signing-key-store';

describe('newJti', () => {
  it('makes UUIDv7 ids that sort in the order they were made, so credentials insert at the index edge', () => {
    const ids = Array.from({ length: 1000 }, () => newJti());
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
