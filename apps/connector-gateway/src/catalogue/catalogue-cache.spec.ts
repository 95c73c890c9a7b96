import { CatalogueCache } from './catalogue-cache';

const op = (name: string, path: string, method = 'GET') => ({ name, method, path, risk: 'read', constraints: {} });
const EXPORT = op('items.export', '/items/export');
const GET = op('items.get', '/items/{id}');
const split = (path: string) => path.slice(1).split('/');

describe('CatalogueCache.match', () => {
  it.each([
    ['the literal declared first', [EXPORT, GET]],
    ['the parameter declared first', [GET, EXPORT]],
  ])('resolves a path to the most specific operation, %s', (_order, operations) => {
    const cache = new CatalogueCache();
    const text = JSON.stringify(operations);
    expect(cache.match('c', text, 'GET', split('/items/export'))).toEqual({ kind: 'matched', operation: EXPORT, pathParams: {} });
    expect(cache.match('c', text, 'GET', split('/items/item_1'))).toEqual({ kind: 'matched', operation: GET, pathParams: { id: 'item_1' } });
    // What a lenient upstream router reads as the literal stays refused.
    expect(cache.match('c', text, 'GET', split('/items/EXPORT'))).toMatchObject({ kind: 'ambiguous', lenient: true, names: ['items.get', 'items.export'] });
    expect(cache.match('c', text, 'POST', split('/items/export'))).toEqual({ kind: 'none' });
  });

  it('resolves three nested templates whatever their order', () => {
    const general = op('general', '/a/{x}/{y}');
    const middle = op('middle', '/a/b/{y}');
    const exact = op('exact', '/a/b/c');
    for (const operations of [
      [general, middle, exact],
      [exact, middle, general],
      [middle, exact, general],
    ]) {
      const cache = new CatalogueCache();
      const text = JSON.stringify(operations);
      expect(cache.match('c', text, 'GET', split('/a/b/c'))).toMatchObject({ kind: 'matched', operation: { name: 'exact' } });
      expect(cache.match('c', text, 'GET', split('/a/b/d'))).toMatchObject({ kind: 'matched', operation: { name: 'middle' }, pathParams: { y: 'd' } });
      expect(cache.match('c', text, 'GET', split('/a/z/c'))).toMatchObject({ kind: 'matched', operation: { name: 'general' } });
    }
  });

  it('refuses a path that two incomparable stored templates match (a catalogue the admin API refuses)', () => {
    for (const operations of [
      [op('x', '/a/{x}/c'), op('y', '/a/b/{y}')],
      [op('y', '/a/b/{y}'), op('x', '/a/{x}/c')],
    ]) {
      const match = new CatalogueCache().match('c', JSON.stringify(operations), 'GET', split('/a/b/c'));
      expect(match).toEqual({ kind: 'ambiguous', names: ['x', 'y'] });
    }
  });
});
