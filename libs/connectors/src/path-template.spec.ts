import { ambiguousPathExample, compilePathTemplate, mostSpecificTemplate, templateCovers, withParameterValue } from './path-template';

const t = compilePathTemplate;

describe('path template precedence', () => {
  it('a literal segment is more specific than a parameter', () => {
    expect(templateCovers(t('/items/{id}'), t('/items/export'))).toBe(true);
    expect(templateCovers(t('/items/export'), t('/items/{id}'))).toBe(false);
    expect(templateCovers(t('/items/{id}'), t('/items/{other}'))).toBe(true);
    expect(templateCovers(t('/items/{id}'), t('/items/{id}/x'))).toBe(false);
  });

  it.each([
    [['/items/{id}', '/items/export'], '/items/export'],
    [['/items/export', '/items/{id}'], '/items/export'],
    [['/a/{x}/{y}', '/a/b/{y}', '/a/b/c'], '/a/b/c'],
    [['/a/b/c', '/a/{x}/{y}', '/a/b/{y}'], '/a/b/c'],
    [['/a/b/{y}', '/a/b/c', '/a/{x}/{y}'], '/a/b/c'],
  ])('picks the most specific whatever the order: %j', (sources, expected) => {
    const index = mostSpecificTemplate(sources.map((source) => t(source)));
    expect(sources[index!]).toBe(expected);
  });

  it('picks none when two are incomparable or of one shape', () => {
    expect(mostSpecificTemplate([t('/a/{x}/c'), t('/a/b/{y}')])).toBeUndefined();
    expect(mostSpecificTemplate([t('/a/b/{y}'), t('/a/{x}/c')])).toBeUndefined();
    expect(mostSpecificTemplate([t('/a/{x}'), t('/a/{y}')])).toBeUndefined();
    expect(mostSpecificTemplate([t('/a/{x}/{z}'), t('/a/{x}/c'), t('/a/b/{y}')])).toBeUndefined();
  });

  it('names a path two incomparable templates both match, and nothing for comparable ones', () => {
    expect(ambiguousPathExample(t('/a/{x}/c'), t('/a/b/{y}'))).toBe('/a/b/c');
    expect(ambiguousPathExample(t('/a/b/{y}'), t('/a/{x}/c'))).toBe('/a/b/c');
    expect(ambiguousPathExample(t('/{x}/{y}/c'), t('/a/{z}/{w}'))).toBe('/a/x/c');
    expect(ambiguousPathExample(t('/items/{id}'), t('/items/export'))).toBeUndefined();
    expect(ambiguousPathExample(t('/a/{x}/c'), t('/a/b/d'))).toBeUndefined();
    expect(ambiguousPathExample(t('/a/{x}'), t('/a/{x}/c'))).toBeUndefined();
  });

  it('narrows a parameter to a value that is one segment', () => {
    expect(templateCovers(t('/items/export'), withParameterValue(t('/items/{id}'), 'id', 'export')!)).toBe(true);
    expect(withParameterValue(t('/items/{id}'), 'id', 'a/b')).toBeUndefined();
    expect(withParameterValue(t('/items/{id}'), 'id', '..')).toBeUndefined();
    expect(withParameterValue(t('/items/{id}'), 'other', 'x')).toBeUndefined();
  });
});
