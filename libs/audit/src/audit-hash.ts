import { createHash } from 'node:crypto';
import { canonicalize } from 'json-canonicalize';
import type { AuditRecord } from './audit-event';

/** The fields of a record that its hash covers: all but the hashes themselves. */
export function hashedBody(record: Omit<AuditRecord, 'hash' | 'prev_hash'>): string {
  return canonicalize({
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
