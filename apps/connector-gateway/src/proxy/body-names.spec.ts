import { bodyMemberNames } from './body-names';

const names = (type: string | undefined, text: string) => bodyMemberNames(type, Buffer.from(text, 'utf8'));

describe('bodyMemberNames', () => {
  it('reads the top-level keys of a JSON object, not nested ones', () => {
    expect(names('application/json', '{"amount":1,"_method":"DELETE","nested":{"repo":"x"}}')).toEqual(['amount', '_method', 'nested']);
    expect(names('application/vnd.api+json; charset=utf-8', '{"a":1}')).toEqual(['a']);
    expect(names('application/json', '[{"a":1}]')).toEqual([]);
  });

  it('reads every string of a JSON body that JSON.parse refuses (a lenient parser may read a key)', () => {
    expect(names('application/json', '{"_method":"DELETE",}')).toEqual(['_method', 'DELETE']);
  });

  it('reads form and multipart parameter names', () => {
    expect(names('application/x-www-form-urlencoded', '_method=DELETE&a=1')).toEqual(['_method', 'a']);
    const multipart = '--b\r\nContent-Disposition: form-data; name="amount"\r\n\r\n1\r\n--b\r\nContent-Disposition: form-data; name=_method\r\n\r\nx\r\n--b--';
    expect(names('multipart/form-data; boundary=b', multipart)).toEqual(['amount', '_method']);
  });

  it('reads a multipart name as escaped, percent-encoded or in RFC 5987 form', () => {
    const part = (disposition: string) => `--b\r\nContent-Disposition: form-data; ${disposition}\r\n\r\nx\r\n--b--`;
    expect(names('multipart/form-data; boundary=b', part('name="pro\\ject"'))).toContain('project');
    expect(names('multipart/form-data; boundary=b', part('name="%70roject"'))).toContain('project');
    expect(names('multipart/form-data; boundary=b', part("name*=UTF-8''%70roject"))).toContain('project');
  });

  it('reads form names and JSON keys without a content type (Rack reads a POST without one as a form)', () => {
    expect(names(undefined, '_method=DELETE&a=1')).toEqual(['_method', 'a']);
    expect(names(undefined, '{"_method":"x"}')).toEqual(['{"_method":"x"}', '_method']);
  });

  it('reads the keys of a JSON object sent as another type (parsers that force JSON), and XML element names', () => {
    expect(names('text/plain', '{"project":"evil","nested":{"repo":"x"}}')).toEqual(['project', 'nested']);
    expect(names('application/octet-stream', '{"project":"evil"}')).toEqual(['project']);
    expect(names('application/xml', '<?xml version="1.0"?><hash><project>evil</project></hash>')).toEqual(['hash', 'project']);
    expect(names('application/atom+xml', '<feed/>')).toEqual(['feed']);
  });

  it('reads the keys of a JSON object in UTF-16 or UTF-32 as Python json.loads detects them, and nothing extra from UTF-8 or binary', () => {
    const wide = (bytes: Buffer, type?: string) => bodyMemberNames(type, bytes);
    expect(wide(Buffer.from('{"project":"x"}', 'utf16le'), 'application/json')).toContain('project');
    expect(wide(Buffer.from('{"project":"x"}', 'utf16le').swap16(), 'text/plain')).toContain('project');
    expect(wide(Buffer.from('\ufeff{"project":"x"}', 'utf16le'), 'text/plain')).toContain('project');
    expect(wide(Buffer.concat([...'{"project":"x"}'].map((char) => Buffer.from([0, 0, 0, char.charCodeAt(0)]))))).toContain('project');
    expect(wide(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0x0d]), 'image/png')).toEqual([]);
  });

  it('reads form names behind ; too (older Go and Python split forms on it)', () => {
    expect(names('application/x-www-form-urlencoded', 'title=x;project=evil')).toEqual(['title', 'project']);
    expect(names(undefined, 'a=1;%u0070roject=2')).toContain('project');
  });

  it('reads every string of a body only a lenient parser reads as a JSON object (a byte order mark, NaN)', () => {
    expect(names('text/plain', '\ufeff{"project":"evil"}')).toEqual(['project', 'evil']);
    expect(names('application/octet-stream', ' {"project":"evil","n":NaN}')).toEqual(['project', 'evil', 'n']);
    expect(names('text/plain', 'not {"project":"evil"}')).toEqual([]);
  });

  it('reads nothing from other text, or an empty body', () => {
    expect(names('text/plain', '_method=DELETE')).toEqual([]);
    expect(names('text/plain', '["a"]')).toEqual([]);
    expect(names('application/json', '')).toEqual([]);
    expect(names(undefined, '')).toEqual([]);
  });
});

describe('bodyMemberNames: content types that lenient parsers read otherwise', () => {
  it('reads the body as each type of a list, or of a type followed by words (PHP, Rack and Rails read the first)', () => {
    expect(names('application/x-www-form-urlencoded, application/json', 'project=evil&a=1')).toEqual(['project', 'a']);
    expect(names('application/x-www-form-urlencoded application/json', 'project=evil')).toEqual(['project']);
    expect(names('application/json, application/x-www-form-urlencoded', '{"a":1}')).toEqual(['a', '{"a":1}']);
  });

  it('reads the keys of a JSON object whatever the type says (Laravel reads a type mentioning /json as JSON)', () => {
    expect(names('application/x-www-form-urlencoded; x=/json', '{"project":"evil"}')).toEqual(['{"project":"evil"}', 'project']);
    expect(names('multipart/form-data; boundary="/json"', '{"project":"evil"}')).toEqual(['project']);
    expect(names('application/xml; x=+json', '{"project":"evil"}')).toEqual(['project']);
  });

  it('keeps reading an ordinary form or JSON body by its type alone', () => {
    expect(names('application/x-www-form-urlencoded; charset=utf-8', 'a=1&b=2')).toEqual(['a', 'b']);
    expect(names('application/json; charset=utf-8', '{"a":"&b=1"}')).toEqual(['a']);
  });
});

describe('bodyMemberNames: %u escapes in form names (classic ASP.NET)', () => {
  it('reads a form name with %uXXXX escapes also decoded', () => {
    expect(names('application/x-www-form-urlencoded', '%u0070roject=evil&a=1')).toEqual(['%u0070roject', 'a', 'project']);
    expect(names(undefined, 'pro%u006Aect=evil')).toContain('project');
    expect(names('application/x-www-form-urlencoded', '%u0070ro%6Aect=1')).toContain('project');
    expect(names('application/x-www-form-urlencoded', 'a=%u0070')).toEqual(['a']);
  });

  it('reads a %u escape of a lone surrogate without throwing', () => {
    expect(() => names('application/x-www-form-urlencoded', '%uD800x=1')).not.toThrow();
    expect(names('application/x-www-form-urlencoded', 'a%u0020b=1')).toContain('a b');
  });
});
