import { redactionSecrets, SecretRedactor } from './secret-redactor';

/** What the stream must come to: every byte of every occurrence (overlapping ones included) masked. */
function reference(text: string, secrets: string[]): { text: string; count: number } {
  const masked = Buffer.from(text, 'utf8');
  const original = Buffer.from(text, 'utf8');
  let count = 0;
  for (const secret of secrets.map((value) => Buffer.from(value, 'utf8'))) {
    for (let at = original.indexOf(secret); at !== -1; at = original.indexOf(secret, at + 1)) {
      masked.fill(0x2a, at, at + secret.length);
      count += 1;
    }
  }
  return { text: masked.toString('utf8'), count };
}

function run(secrets: string[], chunks: Buffer[]): { text: string; count: number; outputs: Buffer[] } {
  const redactor = new SecretRedactor(secrets.map((value) => Buffer.from(value, 'utf8')));
  const outputs = chunks.map((chunk) => redactor.push(chunk));
  outputs.push(redactor.flush());
  return { text: Buffer.concat(outputs).toString('utf8'), count: redactor.count, outputs };
}

/** `text` cut at the given byte offsets. */
function split(text: string, ...offsets: number[]): Buffer[] {
  const bytes = Buffer.from(text, 'utf8');
  const bounds = [0, ...offsets, bytes.length];
  return bounds.slice(1).map((end, index) => Buffer.from(bytes.subarray(bounds[index], end)));
}

describe('SecretRedactor', () => {
  const SECRET = 'sk_live_4f9a1c7e';

  it('masks a secret in one chunk with as many bytes, and counts it', () => {
    const body = `{"seen_authorization":"Bearer ${SECRET}"}`;
    const result = run([SECRET], [Buffer.from(body)]);
    expect(result.text).toBe(`{"seen_authorization":"Bearer ${'*'.repeat(SECRET.length)}"}`);
    expect(result.text.length).toBe(body.length);
    expect(result.count).toBe(1);
  });

  it('catches an occurrence split at every offset, across two and three chunks', () => {
    const body = `before ${SECRET} after`;
    const start = 'before '.length;
    const expected = reference(body, [SECRET]);
    for (let cut = 1; cut < body.length; cut += 1) {
      expect(run([SECRET], split(body, cut))).toMatchObject(expected);
    }
    for (let first = start; first <= start + SECRET.length; first += 1) {
      for (let second = first + 1; second <= start + SECRET.length + 1; second += 1) {
        expect(run([SECRET], split(body, first, second))).toMatchObject(expected);
      }
    }
  });

  it('catches a secret fed one byte at a time', () => {
    const body = `x${SECRET}${SECRET}y${SECRET.slice(0, 5)}`;
    const bytes = Buffer.from(body);
    const chunks = [...bytes].map((byte) => Buffer.from([byte]));
    expect(run([SECRET], chunks)).toMatchObject(reference(body, [SECRET]));
  });

  it('masks overlapping and adjacent occurrences, at every split', () => {
    for (const [secret, body] of [
      ['abab', 'xxababababyy'],
      ['aaaa', 'aaaaaaaaa'],
      ['abcab', 'abcabcabcab!'],
      [SECRET, `${SECRET}${SECRET}${SECRET}`],
    ]) {
      const expected = reference(body, [secret]);
      expect(expected.text).not.toContain(secret);
      for (let cut = 0; cut <= body.length; cut += 1) {
        for (let second = cut; second <= body.length; second += 1) {
          expect(run([secret], split(body, cut, second))).toMatchObject(expected);
        }
      }
    }
  });

  it('masks several secrets, one inside another, at every split', () => {
    const secrets = ['Bearer tok_123456', 'tok_123456', 'key-9876', 'xyzw'];
    const body = 'a Bearer tok_123456 b tok_123456key-9876 c xyzwxyz key-98 Bearer tok_12345';
    const expected = reference(body, secrets);
    expect(expected.count).toBe(5);
    for (let cut = 0; cut <= body.length; cut += 1) {
      for (let second = cut; second <= body.length; second += 3) {
        expect(run(secrets, split(body, cut, second))).toMatchObject(expected);
      }
    }
  });

  it('agrees with the reference on random streams cut at random', () => {
    let seed = 7;
    const random = (below: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % below;
    };
    const secrets = ['abca', 'bcab', 'aabbcc', 'cacacaca'];
    for (let round = 0; round < 500; round += 1) {
      const body = Array.from({ length: 5 + random(60) }, () => 'abc'[random(3)]).join('');
      const cuts = Array.from({ length: random(6) }, () => random(body.length + 1)).sort((a, b) => a - b);
      const result = run(secrets, split(body, ...cuts));
      expect(result).toMatchObject(reference(body, secrets));
      for (const secret of secrets) expect(result.text).not.toContain(secret);
    }
  });

  it('passes empty chunks and leaves bodies without a secret byte for byte', () => {
    const body = 'plain body, nothing to hide: s sk sk_live_ but not the rest';
    const chunks = [Buffer.alloc(0), ...split(body, 3, 3, 30), Buffer.alloc(0)];
    const result = run([SECRET], chunks);
    expect(result.text).toBe(body);
    expect(result.count).toBe(0);
  });

  it('holds back only a possible start of a secret, so event streams are not delayed', () => {
    const redactor = new SecretRedactor([Buffer.from(SECRET)]);
    const event = Buffer.from('event: message\ndata: {"progress":1}\n\n');
    expect(redactor.push(event)).toEqual(event);
    expect(redactor.push(Buffer.from('data: sk_li')).toString()).toBe('data: ');
    expect(redactor.push(Buffer.from('ve_4f9a1c7e\n\n')).toString()).toBe(`${'*'.repeat(SECRET.length)}\n\n`);
    expect(redactor.flush().length).toBe(0);
  });

  it('never writes into the chunk it was given', () => {
    const chunk = Buffer.from(`x${SECRET}x`);
    const copy = Buffer.from(chunk);
    const redactor = new SecretRedactor([Buffer.from(SECRET)]);
    expect(redactor.push(chunk).toString()).toBe(`x${'*'.repeat(SECRET.length)}x`);
    expect(chunk).toEqual(copy);
  });

  it('masks multi-byte UTF-8 secrets byte for byte', () => {
    const secret = 'clé-secrète-€';
    const body = `{"echo":"${secret}"}`;
    const bytes = Buffer.byteLength(body);
    for (let cut = 1; cut < bytes; cut += 1) {
      const result = run([secret], split(body, cut));
      expect(Buffer.byteLength(result.text)).toBe(bytes);
      expect(result.text).not.toContain(secret);
      expect(result.count).toBe(1);
    }
  });
});

describe('redactionSecrets', () => {
  function redact(secrets: string[], body: string): { text: string; count: number } {
    const redactor = new SecretRedactor(redactionSecrets(secrets));
    const text = Buffer.concat([redactor.push(Buffer.from(body, 'utf8')), redactor.flush()]).toString('utf8');
    return { text, count: redactor.count };
  }

  it('adds the JSON-escaped forms of a secret where they differ', () => {
    const forms = redactionSecrets(['ab/c"d', 'plain_token', 'plain_token', '']).map((form) => form.toString('utf8'));
    expect(forms.slice(0, 3)).toEqual(['ab/c"d', 'ab/c\\"d', 'ab\\/c\\"d']);
    expect(forms).toContain('plain_token');
    expect(forms.filter((form) => form === 'plain_token')).toHaveLength(1);
  });

  describe('URL-encoded echoes', () => {
    const SECRET = 'hdr-key/9b2f+51e 0a7c=~!(x)';
    it.each([
      ['encodeURIComponent', encodeURIComponent(SECRET)],
      ['lower-case hex', encodeURIComponent(SECRET).replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase())],
      ['form encoding (+ for space)', new URLSearchParams({ k: SECRET }).toString().slice(2)],
      [
        'form encoding, lower-case hex',
        new URLSearchParams({ k: SECRET })
          .toString()
          .slice(2)
          .replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase()),
      ],
      ['RFC 3986 strict', encodeURIComponent(SECRET).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)],
      ['PHP urlencode', 'hdr-key%2F9b2f%2B51e+0a7c%3D%7E%21%28x%29'],
      ['encodeURI', encodeURI(SECRET)],
    ])('masks the secret as %s, same length, in a query string and in JSON', (_name, encoded) => {
      for (const body of [`https://app.example/cb?token=${encoded}&next=1`, JSON.stringify({ url: `/x?t=${encoded}` })]) {
        const result = redact([SECRET], body);
        expect(result.count).toBeGreaterThanOrEqual(1);
        expect(Buffer.byteLength(result.text)).toBe(Buffer.byteLength(body));
        expect(result.text).not.toContain(encoded);
        expect(result.text).not.toContain(encoded.replaceAll('/', '\\/'));
        expect(decodeURIComponent(result.text.replace(/\+/g, ' ').replace(/%(?![0-9a-f]{2})/gi, ''))).not.toContain(SECRET.slice(2, -2));
      }
    });
  });

  describe('echoes in other text encodings', () => {
    const SECRET = 'tok/9b+2f=<x>&\'"é';
    it.each([
      ['HTML-escaped (escape-html)', SECRET.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;')],
      ['HTML-escaped, OWASP style (/, = as entities)', 'tok&#x2F;9b+2f&#x3D;&lt;x&gt;&amp;&#39;&quot;é'],
      [
        'JSON as Go writes it (<>& as \\u00XX)',
        JSON.stringify(SECRET)
          .slice(1, -1)
          .replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`),
      ],
      ['JSON as Python writes it (non-ASCII as \\uXXXX)', '\\u00e9'],
    ])('masks the secret %s', (_name, encoded) => {
      const full = encoded.startsWith('\\u00e9') ? JSON.stringify(SECRET).slice(1, -1).replace('é', '\\u00e9') : encoded;
      const body = `<p>Authorization: ${full}</p>`;
      const result = redact([SECRET], body);
      expect(result.count).toBeGreaterThanOrEqual(1);
      expect(result.text).toBe(`<p>Authorization: ${'*'.repeat(Buffer.byteLength(full))}</p>`);
    });

    it('masks the secret in a UTF-16 body (LE and BE), same length', () => {
      for (const encode of [(text: string) => Buffer.from(text, 'utf16le'), (text: string) => Buffer.from(text, 'utf16le').swap16()]) {
        const body = encode(`{"echo":"${SECRET}"}`);
        const redactor = new SecretRedactor(redactionSecrets([SECRET]));
        const out = Buffer.concat([redactor.push(body.subarray(0, 21)), redactor.push(body.subarray(21)), redactor.flush()]);
        expect(out.length).toBe(body.length);
        expect(out.includes(encode(SECRET))).toBe(false);
        // An ASCII run of one byte order also matches the other shifted by a byte: masked a byte wider, never less.
        expect(redactor.count).toBeGreaterThanOrEqual(1);
      }
    });
  });

  describe('base64 echoes', () => {
    const SECRET = 'sk_live_4f9a1c7e';
    /** The characters of `text` (base64 of `prefix` + secret + `suffix`) made of the secret's bits alone. */
    const inner = (prefix: number, text: string) => text.slice(Math.ceil((8 * prefix) / 6), Math.floor((8 * (prefix + SECRET.length)) / 6));

    it.each([0, 1, 2, 3, 4, 5])('masks the secret after %i bytes, in base64 and base64url, whatever follows it', (prefix) => {
      for (const suffix of ['', 'x', 'xy', '"}\n']) {
        for (const encoding of ['base64', 'base64url'] as const) {
          const before = 'Bearer debug header: '.slice(0, prefix);
          const text = Buffer.from(`${before}${SECRET}${suffix}`, 'utf8').toString(encoding);
          const body = `{"echo":"${text}"}`;
          const result = redact([SECRET], body);
          expect(result.count).toBeGreaterThanOrEqual(1);
          expect(result.text.length).toBe(body.length);
          const shown = result.text.slice('{"echo":"'.length, -2);
          // Every character carrying only the secret's bits is masked: at most the two mixed characters at its ends are left.
          expect(inner(prefix, shown)).toMatch(/^\*+$/);
          expect(Buffer.from(shown.replace(/\*/g, 'A'), encoding).toString('latin1')).not.toContain(SECRET.slice(1, -1));
        }
      }
    });

    it('masks a Basic credential id:secret and its PHP-escaped form', () => {
      const basic = Buffer.from(`writ-gateway:${SECRET}`).toString('base64');
      const escaped = JSON.stringify(basic).slice(1, -1).replaceAll('/', '\\/');
      const result = redact([SECRET], `{"authorization":"Basic ${escaped}"}`);
      expect(result.count).toBeGreaterThanOrEqual(1);
      expect(result.text).toMatch(/^\{"authorization":"Basic [A-Za-z0-9+/\\]+\*{10,}[A-Za-z0-9+/=]*"\}$/);
    });

    it('leaves base64 text without the secret as it is, and short secrets without base64 forms', () => {
      const other = Buffer.from('Bearer sk_live_00000000').toString('base64');
      expect(redact([SECRET], other)).toEqual({ text: other, count: 0 });
      expect(redactionSecrets(['abc']).map(String)).not.toContain(Buffer.from('abc').toString('base64'));
    });
  });
});
