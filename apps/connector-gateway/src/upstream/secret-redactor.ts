/** What replaces each byte of a secret found in an upstream body (`*`): same length, so `Content-Length` stays true. */
const MASK = 0x2a;

const EMPTY = Buffer.alloc(0);

/** Shortest run of base64 characters taken as an echo of a secret: shorter runs would mask unrelated text. */
const MIN_BASE64_RUN = 8;

/**
 * The URL-encoded forms of a secret: `encodeURIComponent`, RFC 3986 strict (also `!'()*`),
 * form encoding (`URLSearchParams`, PHP `urlencode`: space as `+`, `~` escaped or not),
 * `encodeURI` (leaves `/`, `+`, `=`...), each with upper- and lower-case hex (`%2F`, `%2f`).
 */
function percentForms(value: string): string[] {
  let component: string;
  try {
    component = encodeURIComponent(value);
  } catch {
    // A lone surrogate has no UTF-8 form to escape: no upstream can echo it URL-encoded.
    return [];
  }
  const strict = component.replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const form = new URLSearchParams([['', value]]).toString().slice(1);
  const php = strict.replace(/%20/g, '+').replace(/~/g, '%7E');
  const upper = [component, strict, form, php, encodeURI(value)];
  return [...upper, ...upper.map((text) => text.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()))];
}

/**
 * The base64 and base64url text of a secret wherever it lies in a longer encoded text (an
 * upstream echoing `Authorization` inside a base64 blob, a Basic credential `id:secret`). Base64
 * writes 3 bytes as 4 characters of 6 bits, so the secret's first byte falls at one of three
 * alignments in its group; the characters at each end of the secret's run mix its bits with
 * those of its neighbours, which vary, so they cannot be searched for. For each alignment the
 * pattern is the run of characters made of the secret's bits alone: those are the same in
 * every text that holds the secret at that alignment, and masking them masks the secret but
 * for at most 4 bits at each end (in the mixed characters), never enough to guess it. Runs
 * shorter than {@link MIN_BASE64_RUN} are left out, as they could match unrelated text.
 */
function base64Forms(value: string): string[] {
  const bytes = Buffer.from(value, 'utf8');
  const forms: string[] = [];
  for (const offset of [0, 1, 2]) {
    // Zero bytes stand for the unknown neighbours; only characters wholly inside the secret's bits are kept.
    const text = Buffer.concat([Buffer.alloc(offset), bytes]).toString('base64');
    const start = Math.ceil((8 * offset) / 6);
    const end = Math.floor((8 * (offset + bytes.length)) / 6);
    if (end - start < MIN_BASE64_RUN) continue;
    const run = text.slice(start, end);
    forms.push(run, run.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return forms;
}

const HTML_ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Text forms of one string as JSON and HTML encoders write it: JSON-escaped (`\"`, `\\`),
 * `<>&` as `\u00XX` (Go's `encoding/json`), non-ASCII as `\uXXXX` (Python's `json.dumps`),
 * both, `/` as `\/` with non-ASCII escaped or not (PHP's `json_encode`); HTML-escaped (`&amp;`,
 * `&quot;`, `&#39;`; also `/`, `=` and `` ` `` as OWASP-style encoders do, for an error page
 * quoting a header).
 */
function textForms(form: string): string[] {
  const escaped = JSON.stringify(form).slice(1, -1);
  const unicode = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  const go = escaped.replace(/[<>&\u2028\u2029]/g, unicode);
  const python = escaped.replace(/[\u0080-\uffff]/g, unicode);
  const ascii = go.replace(/[\u0080-\uffff]/g, unicode);
  const html = form.replace(/[&<>"']/g, (c) => HTML_ENTITIES[c]);
  const strictHtml = html.replace(/[/=`]/g, (c) => `&#x${c.charCodeAt(0).toString(16).toUpperCase()};`);
  const php = (text: string) => text.replaceAll('/', '\\/');
  return [form, escaped, php(escaped), go, python, php(python), ascii, php(ascii), html, strictHtml];
}

/**
 * The byte strings to mask in upstream bodies for a set of secret values: each value, its
 * URL-encoded forms (see {@link percentForms}) and its base64/base64url forms at each alignment
 * (see {@link base64Forms}), each as JSON and HTML text would hold it (see {@link textForms}),
 * and the value in UTF-16 (LE and BE, a body in that charset), so that an upstream echoing the
 * secret inside JSON, an HTML page, a query string, a form or an encoded blob is caught too.
 */
export function redactionSecrets(values: readonly string[]): Buffer[] {
  const forms = new Set<Buffer>();
  for (const value of values) {
    if (value.length === 0) continue;
    for (const form of formsOf(value)) forms.add(form);
  }
  return dedupe([...forms]);
}

/**
 * The forms of each secret already computed (~50 µs each, on every call otherwise). Bounded,
 * and dropped whole when full (rotated user tokens come and go); it holds nothing the
 * credential caches beside it do not hold already.
 */
const FORMS = new Map<string, Buffer[]>();
const FORMS_HELD = 1_024;

function formsOf(value: string): Buffer[] {
  const known = FORMS.get(value);
  if (known) return known;
  const texts = new Set<string>();
  for (const form of [value, ...percentForms(value), ...base64Forms(value)]) for (const text of textForms(form)) texts.add(text);
  const le = Buffer.from(value, 'utf16le');
  const forms = [...[...texts].map((text) => Buffer.from(text, 'utf8')), le, Buffer.from(le).swap16()];
  if (FORMS.size >= FORMS_HELD) FORMS.clear();
  FORMS.set(value, forms);
  return forms;
}

/** Byte strings without repeats (two secrets may share a form). */
function dedupe(forms: Buffer[]): Buffer[] {
  if (forms.length < 2) return forms;
  const seen = new Set<string>();
  return forms.filter((form) => {
    const key = form.toString('latin1');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Masks every occurrence of the given secrets in a byte stream fed chunk by chunk: each byte
 * of an occurrence becomes `*`, overlapping and adjacent occurrences included, whatever the
 * chunk boundaries. Only the end of a chunk that could be the start of a secret (the longest
 * suffix that is a proper prefix of one) is held back until the next chunk; everything else
 * is returned at once, so a stream whose chunks end elsewhere (SSE events end with a newline)
 * is not delayed. The gateway applies it to every upstream body (see `relay`).
 */
export class SecretRedactor {
  /** Occurrences masked so far (an occurrence is counted once, when its last byte arrives). */
  count = 0;
  private readonly secrets: Buffer[];
  /** The held-back bytes as received. */
  private held: Buffer = EMPTY;
  /** The held-back bytes with the masks of occurrences already found applied, when that differs from {@link held}. */
  private heldMasked: Buffer | undefined;

  constructor(secrets: readonly Buffer[]) {
    this.secrets = secrets.filter((secret) => secret.length > 0);
  }

  /** The bytes of the stream up to `chunk` that can be sent now, masked (possibly none). */
  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return EMPTY;
    const heldLength = this.held.length;
    const input = heldLength === 0 ? chunk : Buffer.concat([this.held, chunk], heldLength + chunk.length);
    // Every occurrence ending in this chunk lies wholly in `input`: the held bytes start at the
    // earliest position where a secret could still be completing. Those wholly inside the held
    // bytes were counted with the previous chunk.
    const ranges: number[] = [];
    for (const secret of this.secrets) {
      for (let at = input.indexOf(secret); at !== -1; at = input.indexOf(secret, at + 1)) {
        ranges.push(at, at + secret.length);
        if (at + secret.length > heldLength) this.count += 1;
      }
    }
    const keep = this.pendingPrefix(input);
    const cut = input.length - keep;
    const heldNext = keep === 0 ? EMPTY : Buffer.from(input.subarray(cut));
    let output = input;
    const masked = ranges.length > 0 || this.heldMasked !== undefined;
    if (masked) {
      // The upstream's chunk is never written to: a concatenation is already a copy of its own.
      output = input === chunk ? Buffer.from(chunk) : input;
      this.heldMasked?.copy(output, 0);
      for (let index = 0; index < ranges.length; index += 2) output.fill(MASK, ranges[index], ranges[index + 1]);
    }
    this.held = heldNext;
    this.heldMasked = keep > 0 && masked ? Buffer.from(output.subarray(cut)) : undefined;
    if (this.heldMasked?.equals(this.held)) this.heldMasked = undefined;
    return keep === 0 ? output : output.subarray(0, cut);
  }

  /** The held-back bytes, at the end of the stream. */
  flush(): Buffer {
    const tail = this.heldMasked ?? this.held;
    this.held = EMPTY;
    this.heldMasked = undefined;
    return tail;
  }

  /** The length of the longest suffix of `input` that is a proper prefix of a secret. */
  private pendingPrefix(input: Buffer): number {
    const end = input.length;
    let keep = 0;
    for (const secret of this.secrets) {
      // Starts that would hold back more than found so far, and leave part of the secret to come.
      const limit = end - keep;
      for (let at = input.indexOf(secret[0], Math.max(0, end - secret.length + 1)); at !== -1 && at < limit; at = input.indexOf(secret[0], at + 1)) {
        if (secret.compare(input, at, end, 0, end - at) === 0) {
          keep = end - at;
          break;
        }
      }
    }
    return keep;
  }
}
