import { createHash } from 'node:crypto';
import type { AuditRecord } from './audit-event';

/**
 * RFC 8785 canonical JSON of a value as `JSON.stringify` sees it: members sorted by UTF-16 code
 * units, strings and numbers as ECMAScript writes them, members holding undefined left out.
 * json-canonicalize's output, except for an object with a member named `toJSON` that is not a
 * function: that library then writes the object with `JSON.stringify`, in its members' order of
 * the moment, and data read back from jsonb (shortest names first) lost the order it was hashed
 * in; any caller could put such a member in an event's data (a task's metadata) and make the
 * chain fail to verify from there. Only a callable `toJSON` is called, as `JSON.stringify` does.
 */
export function canonicalText(input: unknown): string | undefined {
  let value = input;
  if (value !== null && typeof value === 'object') {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = (toJSON as () => unknown).call(value);
  }
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new TypeError(`a non-finite number (${value}) is not JSON`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((element) => canonicalText(element) ?? 'null').join(',')}]`;
  const members: string[] = [];
  for (const name of Object.keys(value).sort()) {
    const text = canonicalText((value as Record<string, unknown>)[name]);
    if (text !== undefined) members.push(`${JSON.stringify(name)}:${text}`);
  }
  return `{${members.join(',')}}`;
}

/** {@link canonicalText} of a value that has a JSON form (anything but undefined, a function or a symbol). */
export function canonicalJsonText(value: unknown): string {
  const text = canonicalText(value);
  if (text === undefined) throw new TypeError('the value has no JSON form');
  return text;
}

/** The fields of a record that its hash covers: all but the hashes themselves. */
export function hashedBody(record: Omit<AuditRecord, 'hash' | 'prev_hash'>): string {
  return canonicalJsonText({
    seq: record.seq,
    id: record.id,
    occurred_at: record.occurred_at,
    type: record.type,
    outcome: record.outcome,
    actor_type: record.actor_type,
    actor_id: record.actor_id,
    agent_id: record.agent_id,
    task_id: record.task_id,
    connector_id: record.connector_id,
    data: record.data,
  });
}

/** `hash = SHA-256(prev_hash || canonical JSON of the event)` (RFC 8785), hex. */
export function chainHash(prevHash: string, record: Omit<AuditRecord, 'hash' | 'prev_hash'>): string {
  return createHash('sha256').update(prevHash, 'utf8').update(hashedBody(record), 'utf8').digest('hex');
}

/**
 * {@link chainHash} for verification: undefined when the record cannot be canonicalised at all,
 * e.g. `data` nested deeper than the call stack (the log's own writers never nest beyond a few
 * dozen levels; a row like that was written behind its back). A verifier reports it as an
 * invalid event instead of failing to verify.
 */
export function verifiedChainHash(prevHash: string, record: Omit<AuditRecord, 'hash' | 'prev_hash'>): string | undefined {
  try {
    return chainHash(prevHash, record);
  } catch (error) {
    if (error instanceof RangeError || error instanceof TypeError) return undefined;
    throw error;
  }
}

/** The members of the hashed body, in RFC 8785 order (UTF-16 code units). */
const BODY_ORDER = ['actor_id', 'actor_type', 'agent_id', 'connector_id', 'data', 'id', 'occurred_at', 'outcome', 'seq', 'task_id', 'type'] as const;

/**
 * {@link chainHash} of an event being written, whose `data` is already normalised and
 * canonicalised (`normaliseEventData`): the same bytes as `hashedBody`, without walking `data`
 * again. `audit-hash.spec.ts` checks both agree.
 */
export function chainHashOfCanonicalData(prevHash: string, record: Omit<AuditRecord, 'hash' | 'prev_hash'>, canonicalData: string): string {
  let body = '{';
  for (const name of BODY_ORDER) {
    const value = name === 'data' ? canonicalData : record[name] === undefined ? undefined : canonicalText(record[name]);
    if (value === undefined) continue;
    body += (body.length > 1 ? ',' : '') + JSON.stringify(name) + ':' + value;
  }
  return createHash('sha256')
    .update(prevHash, 'utf8')
    .update(body + '}', 'utf8')
    .digest('hex');
}
