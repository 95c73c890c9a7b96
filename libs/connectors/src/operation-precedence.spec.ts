import { widenedOperations } from './operation-precedence';

const op = (name: string, path: string, method = 'GET') => ({ name, method, path });
const GET = op('items.get', '/items/{id}');
const EXPORT = op('items.export', '/items/export');

describe('widenedOperations', () => {
  it('names the general operation when the specific one beside it is removed or moved, in either order', () => {
    expect(widenedOperations([EXPORT, GET], [GET])).toEqual(['items.get']);
    expect(widenedOperations([GET, EXPORT], [GET])).toEqual(['items.get']);
    expect(widenedOperations([GET, EXPORT], [GET, { ...EXPORT, path: '/exports' }])).toEqual(['items.get']);
    expect(widenedOperations([GET, EXPORT], [GET, { ...EXPORT, method: 'POST' }])).toEqual(['items.get']);
    // Renamed, same route: nothing moves.
    expect(widenedOperations([GET, EXPORT], [{ ...EXPORT, name: 'items.dump' }, GET])).toEqual([]);
  });

  it('names nothing when the paths stay with a rival, or when rivals are only added', () => {
    expect(widenedOperations([GET], [GET, EXPORT])).toEqual([]);
    expect(widenedOperations([GET, EXPORT], [EXPORT, GET])).toEqual([]);
    const general = op('general', '/a/{x}/{y}');
    const exact = op('exact', '/a/b/c');
    const middle = op('middle', '/a/b/{y}');
    // /a/b/c now goes to middle, still not to general; middle itself reaches /a/b/c anew.
    expect(widenedOperations([general, exact, middle], [general, middle])).toEqual(['middle']);
    expect(widenedOperations([general, exact], [general, middle])).toEqual([]);
    expect(widenedOperations([general, middle], [general, exact])).toEqual(['general']);
  });

  it('ignores tools, other methods and other shapes', () => {
    expect(widenedOperations([{ name: 'lookup' }, { name: 'search' }], [{ name: 'lookup' }])).toEqual([]);
    expect(widenedOperations([GET, op('items.export', '/items/export', 'POST')], [GET])).toEqual([]);
    expect(widenedOperations([GET, op('items.sub', '/items/export/x')], [GET])).toEqual([]);
  });
});
