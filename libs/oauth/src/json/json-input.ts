import { safeToken } from '../util/safe-description';
import { numberTextIsExact } from './exact-decimal';

/**
 * How deep JSON may nest, by default, wherever Writ reads JSON from a caller (admin and Tasks
 * API bodies, `authorization_details`, gateway bodies checked for constraints). Nothing Writ
 * accepts needs more than a handful of levels; the limit keeps recursive validators far from
 * the stack limit.
 */
export const DEFAULT_MAX_JSON_DEPTH = 32;

/**
 * Object keys refused anywhere in caller JSON. JavaScript gives them meaning (`__proto__`
 * sets the prototype on assignment, and class-transformer silently drops `__proto__` and
 * `constructor`), so accepting them would let one component see a member that another never
 * sees. They are refused by name rather than dropped.
 */
export const FORBIDDEN_JSON_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * {@link FORBIDDEN_JSON_KEYS} and every other name `Object.prototype` holds (`toString`,
 * `valueOf`, `hasOwnProperty`…). class-transformer, which turns the admin and Tasks API bodies
 * into DTOs, skips a member whose name a fresh object already answers with a function, at any
 * depth: a connector constraint named `valueOf` was stored as no constraint at all. Where a body
 * goes through it, these names are refused like `__proto__`.
 */
export const OBJECT_PROTOTYPE_JSON_KEYS: ReadonlySet<string> = new Set([
  ...FORBIDDEN_JSON_KEYS,
  'toString',
  'toLocaleString',
  'valueOf',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
]);

/**
 * Why {@link parseJsonInput} refused a text; `path` names the member (e.g.
 * `allowed[0].constraints.__proto__`). `problems` lists every problem found, this one first, in
 * document order: just this one unless `maxProblems` asked for more.
 */
export class JsonInputError extends Error {
  problems: readonly JsonInputError[];

  constructor(
    readonly path: string,
    readonly problem: string,
    readonly reason: JsonInputProblem,
  ) {
    super(path ? `${path} ${problem}` : problem);
    this.name = 'JsonInputError';
    this.problems = [this];
  }
}

/** Stable reasons of a {@link JsonInputError}. */
export type JsonInputProblem =
  'syntax' | 'too_deep' | 'duplicate_key' | 'forbidden_key' | 'lone_surrogate' | 'nul_character' | 'number_out_of_range' | 'inexact_number';

/** Options of {@link parseJsonInput} and {@link findJsonInputProblem}. */
export interface JsonInputOptions {
  /** Deepest nesting of arrays and objects (the root container is depth 1). Default {@link DEFAULT_MAX_JSON_DEPTH}. */
  readonly maxDepth?: number;
  /** Also refuse U+0000 in strings and keys (PostgreSQL `text` and `jsonb` cannot store it). Default false. */
  readonly forbidNul?: boolean;
  /** Prefix of every reported path, e.g. `authorization_details`. Default none. */
  readonly root?: string;
  /** Member names refused at any depth (`is a forbidden member name`). Default {@link FORBIDDEN_JSON_KEYS}. */
  readonly forbiddenKeys?: ReadonlySet<string>;
  /**
   * Most problems {@link parseJsonInput} reports at once (in {@link JsonInputError.problems}):
   * with more than 1 it reads on past a member problem (a duplicate or forbidden key, a lone
   * surrogate, NUL, a number out of range or inexact) to find the others, in document order, and
   * stops at this many. A syntax error is always alone (the text is not JSON: what came before
   * it is moot); nesting deeper than `maxDepth` ends the reading, after the problems before it.
   * Default 1.
   */
  readonly maxProblems?: number;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const PLAIN_STRING = /[^"\\\u0000-\u001f]*/y;
const ESCAPES: Readonly<Record<string, string>> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

/** True when `value` holds a UTF-16 surrogate that is not part of a pair (not valid Unicode text). */
export function hasLoneSurrogate(value: string): boolean {
  return LONE_SURROGATE.test(value);
}

/** `value` with every lone surrogate replaced by U+FFFD (what a UTF-8 encoder would write). */
export function replaceLoneSurrogates(value: string): string {
  return LONE_SURROGATE.test(value) ? value.replace(new RegExp(LONE_SURROGATE.source, 'g'), '\ufffd') : value;
}

/** `parent.key` or `parent[index]`, with a hostile key rendered printable and short. */
export function jsonPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  const name = safeToken(key);
  return parent ? `${parent}.${name}` : name;
}

/**
 * A JSON parser (RFC 8259) that refuses, naming the member, what `JSON.parse` lets through
 * and other components would read differently or not at all: a key repeated in one object
 * (parsers disagree on which wins), the keys `__proto__`, `constructor` and `prototype`,
 * lone UTF-16 surrogates (escaped `\ud800`; not Unicode, and refused by PostgreSQL), numbers
 * that overflow to infinity (`1e400`) or that a double cannot hold exactly (`9007199254740993`
 * reads as ...992, `1e-400` as 0), nesting deeper than `maxDepth`, and, with `forbidNul`, U+0000.
 * With `maxProblems`, up to that many member problems are reported at once (see
 * {@link JsonInputOptions.maxProblems}). Everything else parses exactly as `JSON.parse` would. Recursion is bounded by `maxDepth`, so
 * hostile nesting cannot overflow the stack.
 */
export function parseJsonInput(text: string, options: JsonInputOptions = {}): unknown {
  return new Parser(text, options).parseDocument();
}

/**
 * The first problem {@link parseJsonInput} would report in an already parsed value (duplicate
 * keys aside, which a parsed value cannot show), or `undefined`. For values that arrive
 * parsed by another component, e.g. a body that `JSON.parse` already read.
 */
export function findJsonInputProblem(value: unknown, options: JsonInputOptions = {}): JsonInputError | undefined {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const checkString = (text: string, path: string, what: string): JsonInputError | undefined => {
    if (hasLoneSurrogate(text)) return new JsonInputError(path, `${what}contains a lone UTF-16 surrogate (not valid Unicode)`, 'lone_surrogate');
    if (options.forbidNul && text.includes('\u0000')) return new JsonInputError(path, `${what}contains a NUL character`, 'nul_character');
    return undefined;
  };
  const walk = (node: unknown, path: string, depth: number): JsonInputError | undefined => {
    if (typeof node === 'string') return checkString(node, path, '');
    if (typeof node === 'number') return Number.isFinite(node) ? undefined : new JsonInputError(path, 'is a number out of range', 'number_out_of_range');
    if (node === null || typeof node !== 'object') return undefined;
    if (depth >= maxDepth) return new JsonInputError(path, `nests deeper than ${maxDepth} levels`, 'too_deep');
    if (Array.isArray(node)) {
      for (let index = 0; index < node.length; index += 1) {
        const found = walk(node[index], jsonPath(path, index), depth + 1);
        if (found) return found;
      }
      return undefined;
    }
    for (const key of Object.keys(node)) {
      const keyPath = jsonPath(path, key);
      if ((options.forbiddenKeys ?? FORBIDDEN_JSON_KEYS).has(key)) return new JsonInputError(keyPath, 'is a forbidden member name', 'forbidden_key');
      const badKey = checkString(key, keyPath, 'name ');
      if (badKey) return badKey;
      const found = walk((node as Record<string, unknown>)[key], keyPath, depth + 1);
      if (found) return found;
    }
    return undefined;
  };
  return walk(value, options.root ?? '', 0);
}

class Parser {
  private index = 0;
  private readonly maxDepth: number;
  private readonly forbidNul: boolean;
  private readonly root: string;
  private readonly maxProblems: number;
  private readonly forbiddenKeys: ReadonlySet<string>;
  private readonly problems: JsonInputError[] = [];

  constructor(
    private readonly text: string,
    options: JsonInputOptions,
  ) {
    this.maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
    this.forbidNul = options.forbidNul ?? false;
    this.root = options.root ?? '';
    this.maxProblems = Math.max(1, options.maxProblems ?? 1);
    this.forbiddenKeys = options.forbiddenKeys ?? FORBIDDEN_JSON_KEYS;
  }

  parseDocument(): unknown {
    this.skipWhitespace();
    const value = this.parseValue(this.root, 0);
    this.skipWhitespace();
    if (this.index !== this.text.length) throw this.syntax();
    if (this.problems.length > 0) throw this.refusal();
    return value;
  }

  /** Notes a member problem; stops the reading once `maxProblems` are noted. */
  private report(problem: JsonInputError): void {
    this.problems.push(problem);
    if (this.problems.length >= this.maxProblems) throw this.refusal();
  }

  /** The first problem, carrying all of them. */
  private refusal(): JsonInputError {
    const [first] = this.problems;
    first.problems = [...this.problems];
    return first;
  }

  private syntax(): JsonInputError {
    return new JsonInputError('', `is not valid JSON (at character ${this.index})`, 'syntax');
  }

  private skipWhitespace(): void {
    const { text } = this;
    while (this.index < text.length) {
      const char = text.charCodeAt(this.index);
      if (char !== 0x20 && char !== 0x0a && char !== 0x0d && char !== 0x09) return;
      this.index += 1;
    }
  }

  private parseValue(path: string, depth: number): unknown {
    const char = this.text[this.index];
    switch (char) {
      case '{':
        return this.parseObject(path, depth + 1);
      case '[':
        return this.parseArray(path, depth + 1);
      case '"':
        return this.checked(this.parseString(), path, '');
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      default:
        return this.parseNumber(path);
    }
  }

  private literal<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.index)) throw this.syntax();
    this.index += word.length;
    return value;
  }

  private parseNumber(path: string): number {
    NUMBER.lastIndex = this.index;
    const match = NUMBER.exec(this.text);
    if (!match || match[0] === '' || match[0] === '-') throw this.syntax();
    this.index += match[0].length;
    const value = Number(match[0]);
    if (!Number.isFinite(value)) {
      this.report(new JsonInputError(path, 'is a number out of range', 'number_out_of_range'));
    } else if (!numberTextIsExact(match[0], value)) {
      // Read as a double, the number would be checked, stored and audited as another one.
      this.report(new JsonInputError(path, `is a number that cannot be kept exactly (it would read as ${String(value)})`, 'inexact_number'));
    }
    return value;
  }

  private enter(path: string, depth: number): void {
    if (depth > this.maxDepth) {
      // Reading on would mean recursing deeper: the problems so far and this one end the reading.
      this.problems.push(new JsonInputError(path, `nests deeper than ${this.maxDepth} levels`, 'too_deep'));
      throw this.refusal();
    }
    this.index += 1;
    this.skipWhitespace();
  }

  private parseArray(path: string, depth: number): unknown[] {
    this.enter(path, depth);
    const array: unknown[] = [];
    if (this.text[this.index] === ']') {
      this.index += 1;
      return array;
    }
    for (;;) {
      array.push(this.parseValue(jsonPath(path, array.length), depth));
      this.skipWhitespace();
      const next = this.text[this.index];
      this.index += 1;
      if (next === ']') return array;
      if (next !== ',') {
        this.index -= 1;
        throw this.syntax();
      }
      this.skipWhitespace();
    }
  }

  private parseObject(path: string, depth: number): Record<string, unknown> {
    this.enter(path, depth);
    const object: Record<string, unknown> = {};
    if (this.text[this.index] === '}') {
      this.index += 1;
      return object;
    }
    for (;;) {
      if (this.text[this.index] !== '"') throw this.syntax();
      const key = this.parseString();
      const keyPath = jsonPath(path, key);
      this.checked(key, keyPath, 'name ');
      // A refused member is read (its own problems count too) but never assigned: `__proto__`
      // would set the prototype, and a repeated key keeps its first value.
      let keep = true;
      if (this.forbiddenKeys.has(key)) {
        keep = false;
        this.report(new JsonInputError(keyPath, 'is a forbidden member name', 'forbidden_key'));
      } else if (Object.prototype.hasOwnProperty.call(object, key)) {
        keep = false;
        this.report(new JsonInputError(keyPath, 'appears more than once in one object', 'duplicate_key'));
      }
      this.skipWhitespace();
      if (this.text[this.index] !== ':') throw this.syntax();
      this.index += 1;
      this.skipWhitespace();
      const member = this.parseValue(keyPath, depth);
      if (keep) object[key] = member;
      this.skipWhitespace();
      const next = this.text[this.index];
      this.index += 1;
      if (next === '}') return object;
      if (next !== ',') {
        this.index -= 1;
        throw this.syntax();
      }
      this.skipWhitespace();
    }
  }

  private checked(value: string, path: string, what: string): string {
    if (hasLoneSurrogate(value)) {
      this.report(new JsonInputError(path, `${what}contains a lone UTF-16 surrogate (not valid Unicode)`, 'lone_surrogate'));
    } else if (this.forbidNul && value.includes('\u0000')) {
      this.report(new JsonInputError(path, `${what}contains a NUL character`, 'nul_character'));
    }
    return value;
  }

  /** A string starting at the current `"`; the index ends after its closing quote. */
  private parseString(): string {
    const { text } = this;
    this.index += 1;
    let result = '';
    for (;;) {
      PLAIN_STRING.lastIndex = this.index;
      const plain = PLAIN_STRING.exec(text)![0];
      result += plain;
      this.index += plain.length;
      const char = text[this.index];
      if (char === '"') {
        this.index += 1;
        return result;
      }
      if (char !== '\\') throw this.syntax(); // end of text or an unescaped control character
      const escape = text[this.index + 1];
      if (escape === 'u') {
        const hex = text.slice(this.index + 2, this.index + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw this.syntax();
        result += String.fromCharCode(parseInt(hex, 16));
        this.index += 6;
      } else {
        const decoded = escape === undefined ? undefined : ESCAPES[escape];
        if (decoded === undefined) throw this.syntax();
        result += decoded;
        this.index += 2;
      }
    }
  }
}
