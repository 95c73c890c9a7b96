import { types } from 'node:util';

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
/** Characters jsonb refuses (NUL) or that are not Unicode (a lone UTF-16 surrogate). */
const NEEDS_CLEANING = /[\u0000\ud800-\udfff]/;

/** A string jsonb accepts: no NUL (dropped) and no lone UTF-16 surrogate (replaced by U+FFFD, as a UTF-8 encoder would). */
export function jsonbString(value: string): string {
  // Most strings have neither: skip the two replacements.
  if (!NEEDS_CLEANING.test(value)) return value;
  return value.replace(/\u0000/g, '').replace(LONE_SURROGATE, '\ufffd');
}

/** Event data as jsonb will hold it, and its RFC 8785 canonical JSON. */
export interface NormalisedData {
  value: Record<string, unknown>;
  canonical: string;
}

/** Defines an own data property, also one named `__proto__` (as `JSON.parse` does). */
function define(target: Record<string, unknown>, name: string, value: unknown): void {
  if (name === '__proto__') Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });
  else target[name] = value;
}

/** RFC 8785 member order: by UTF-16 code units, which is what `Array.prototype.sort` compares. */
function canonicalObject(names: string[], texts: Map<string, string>): string {
  names.sort();
  let text = '{';
  for (let index = 0; index < names.length; index += 1) {
    if (index > 0) text += ',';
    text += JSON.stringify(names[index]) + ':' + texts.get(names[index]);
  }
  return text + '}';
}

/**
 * One walk of `value` as `JSON.stringify` serialises it, with the replacer the audit log always
 * used (strings made jsonb-safe, member names too), returning what `JSON.parse` of that text
 * gives and the canonical JSON (RFC 8785, as `canonicalText` writes it) of that parsed value; undefined
 * where `JSON.stringify` leaves the member out.
 */
function walk(key: string, input: unknown, stack: Set<object>): [unknown, string] | undefined {
  let value = input;
  // SerializeJSONProperty: toJSON first (a Date becomes its ISO string), then the replacer.
  if ((typeof value === 'object' && value !== null) || typeof value === 'bigint') {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = (toJSON as (this: unknown, key: string) => unknown).call(value, key);
  }
  if (typeof value === 'string') value = jsonbString(value);
  else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const names = Object.keys(value);
    if (names.some((name) => jsonbString(name) !== name)) {
      value = Object.fromEntries(names.map((name) => [jsonbString(name), (value as Record<string, unknown>)[name]]));
    }
  }
  // Boxed primitives serialise as their primitive (the replacer saw the box).
  if (typeof value === 'object' && value !== null) {
    if (types.isNumberObject(value)) value = Number(value);
    else if (types.isStringObject(value)) value = String(value);
    else if (types.isBooleanObject(value)) value = value.valueOf();
    else if (types.isBigIntObject(value)) value = value.valueOf();
  }
  if (value === null) return [null, 'null'];
  switch (typeof value) {
    case 'boolean':
      return [value, value ? 'true' : 'false'];
    case 'string':
      return [value, JSON.stringify(value)];
    case 'number':
      if (!Number.isFinite(value)) return [null, 'null'];
      // -0 is written "0" and read back as 0.
      return [value === 0 ? 0 : value, JSON.stringify(value)];
    case 'bigint':
      throw new TypeError('Do not know how to serialize a BigInt');
    case 'object':
      break;
    default:
      // undefined, functions, symbols.
      return undefined;
  }
  const object = value;
  if (stack.has(object)) throw new TypeError('Converting circular structure to JSON');
  stack.add(object);
  try {
    if (Array.isArray(object)) {
      const items: unknown[] = [];
      let text = '[';
      for (let index = 0; index < object.length; index += 1) {
        const member = walk(String(index), object[index], stack) ?? [null, 'null'];
        items.push(member[0]);
        text += (index > 0 ? ',' : '') + member[1];
      }
      return [items, text + ']'];
    }
    const result: Record<string, unknown> = {};
    const texts = new Map<string, string>();
    for (const name of Object.keys(object)) {
      const member = walk(name, (object as Record<string, unknown>)[name], stack);
      if (member === undefined) continue;
      define(result, name, member[0]);
      texts.set(name, member[1]);
    }
    return [result, canonicalObject([...texts.keys()], texts)];
  } finally {
    stack.delete(object);
  }
}

/**
 * An event's `data` as jsonb will hold it (no undefined members; strings, values and member
 * names, jsonb accepts: see {@link jsonbString}) and the canonical JSON its hash covers, in one
 * walk. Byte for byte what the log always computed in two passes and three serialisations:
 * `canonicalize(JSON.parse(JSON.stringify(data ?? {}, replacer)))`; `audit-canonical.spec.ts`
 * compares both on hostile inputs. An event quoting hostile input (a refusal's description, a
 * rejected value) is still written, so a refusal is never lost to the encoding of what was refused.
 */
export function normaliseEventData(data: Record<string, unknown> | undefined): NormalisedData {
  const input = data ?? {};
  const walked = walk('', input, new Set());
  // JSON.parse(undefined) threw here too.
  if (walked === undefined) throw new TypeError('audit event data must serialise to JSON');
  return { value: walked[0] as Record<string, unknown>, canonical: walked[1] };
}
