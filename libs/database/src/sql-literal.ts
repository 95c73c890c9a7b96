import type { PoolClient } from 'pg';

/**
 * SQL literals and session-prepared statements, for hot paths that send several statements in
 * one simple-protocol message (one round trip) instead of one extended-protocol round trip each:
 * `pg` sends a parameterised query and waits for its result before sending the next, and cannot
 * pipeline them. A statement prepared once per connection (`PREPARE`, its plan reused) is run
 * with `EXECUTE name(<literals>)` inside such a message, so nothing is parsed or planned per call
 * but the literals. `pg`'s own `escapeLiteral` walks the string one character at a time in
 * JavaScript; these replace with regular expressions, which matters for batches of audit events.
 */

/** A value that cannot be a literal (PostgreSQL text cannot hold NUL): send it as a parameter instead. */
export class NotALiteralError extends Error {
  constructor() {
    super('a value holds a NUL character and cannot be sent as a literal');
    this.name = 'NotALiteralError';
  }
}

const SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `value` with each lone UTF-16 surrogate replaced by U+FFFD, as `pg` (UTF-8) would send it. */
export function wellFormed(value: string): string {
  // Most strings hold no surrogate at all: one cheap scan instead of the look-around one.
  return SURROGATE.test(value) ? value.replace(LONE_SURROGATE, '\uFFFD') : value;
}

/**
 * A string as a quoted SQL literal. The `E''` form, with backslashes doubled, is read the same
 * whatever `standard_conforming_strings` says. Lone UTF-16 surrogates become U+FFFD, as when
 * `pg` encodes a parameter.
 */
export function sqlLiteral(value: string): string {
  if (value.includes('\u0000')) throw new NotALiteralError();
  return `E'${wellFormed(value).replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** A one-dimensional array of text, numbers, booleans and NULLs as a quoted SQL literal (`'{...}'`). */
export function sqlArrayLiteral(values: ReadonlyArray<string | number | boolean | null | undefined>): string {
  let text = '{';
  for (let index = 0; index < values.length; index += 1) {
    const value = values[index];
    if (index > 0) text += ',';
    if (value === null || value === undefined) text += 'NULL';
    else if (typeof value === 'boolean') text += value ? 't' : 'f';
    else if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new RangeError(`not a finite number: ${value}`);
      text += String(value);
    } else text += `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  }
  return sqlLiteral(text + '}');
}

/**
 * A statement prepared once per connection and run by name: with `EXECUTE` (its values as
 * literals, inside a multi-statement message) where the connection is a session of its own, or
 * as a named query with parameters (`pg` prepares it at protocol level) where it is not (a
 * transaction-mode pooler hands each transaction to any server connection, where a `PREPARE`
 * made on another does not exist: {@link isMissingStatement}).
 */
export interface SessionStatement {
  name: string;
  /** The statement, its parameters typed by casts (`$1::text[]`). */
  text: string;
}

const preparedOn = new WeakMap<PoolClient, Set<string>>();

/**
 * Prepares `statements` on `client` (once per connection; a connection the pool replaces is a
 * new client). Must run outside a transaction block that could fail: `PREPARE` outlives it.
 */
export async function prepareOnce(client: PoolClient, statements: readonly SessionStatement[]): Promise<void> {
  let prepared = preparedOn.get(client);
  if (!prepared) preparedOn.set(client, (prepared = new Set()));
  for (const statement of statements) {
    if (prepared.has(statement.name)) continue;
    try {
      await client.query(`PREPARE ${statement.name} AS ${statement.text}`);
    } catch (error) {
      // 42P05: already prepared on this session (by an earlier holder of the connection).
      if ((error as { code?: string }).code !== '42P05') throw error;
    }
    prepared.add(statement.name);
  }
}

/** Forgets what was prepared on `client` (it was found missing there). */
export function forgetPrepared(client: PoolClient): void {
  preparedOn.delete(client);
}

/** Whether `error` says a prepared statement does not exist on the server connection (26000). */
export function isMissingStatement(error: unknown): boolean {
  return (error as { code?: string } | undefined)?.code === '26000';
}

/** `EXECUTE name(args...)`, the arguments already literals. */
export function executeStatement(statement: SessionStatement, args: readonly string[]): string {
  return `EXECUTE ${statement.name}(${args.join(', ')})`;
}
