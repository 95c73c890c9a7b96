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
  it('adds the JSON-escaped forms of a secret where they differ', () => {
    const forms = redactionSecrets(['ab/c"d', 'plain_token', 'plain_token', '']).map((form) => form.toString('utf8'));
    expect(forms).toEqual(['ab/c"d', 'ab/c\\"d', 'ab\\/c\\"d', 'plain_token']);
  });
});
