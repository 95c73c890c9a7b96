import type { Pool } from 'pg';
import { sealCredential, UpstreamCredential } from '@writ/connectors';
import type { MasterKey } from '@writ/keys';
import { createClientKey, insertAgentRow, insertOrchestratorRow, jwksOf, PAYMENTS_OPERATIONS, rowIntegrityOf, tagConnectorRow } from '@writ/testing';
import type { TestClient } from './oauth-client';

/** The payments connector of the contract's example (shared with the benchmarks). */
export { PAYMENTS_OPERATIONS };

/**
 * Inserts an agent with a fresh key (fixture; the admin API has its own suites), tagged under the
 * master key of the runtime `pool` belongs to, as Writ writes it.
 */
export async function seedAgent(pool: Pool, id: string, status: 'active' | 'suspended' = 'active'): Promise<TestClient> {
  const key = await createClientKey();
  await insertAgentRow(pool, rowIntegrityOf(pool), { id, status, jwks: jwksOf(key) });
  return { id, key };
}

/** Inserts an orchestrator with a fresh key, allowed to serve `agents` (tagged, as {@link seedAgent}). */
export async function seedOrchestrator(pool: Pool, id: string, agents: string[] = ['*']): Promise<TestClient> {
  const key = await createClientKey();
  await insertOrchestratorRow(pool, rowIntegrityOf(pool), { id, jwks: jwksOf(key), allowedAgents: agents });
  return { id, key };
}

/** Inserts a connector with a catalogue (no credential), tagged as Writ writes it. */
export async function seedConnector(pool: Pool, id: string, operations: unknown[] = PAYMENTS_OPERATIONS, baseUrl = 'http://127.0.0.1:9'): Promise<void> {
  await pool.query(`INSERT INTO connectors (id, name, base_url, operations) VALUES ($1, $1, $2, $3)`, [id, baseUrl, JSON.stringify(operations)]);
  await tagConnectorRow(pool, rowIntegrityOf(pool), id);
}

/** Seals an upstream credential into a connector row, bound to its current `base_url`, as the admin API does. */
export async function setConnectorCredential(pool: Pool, master: MasterKey, id: string, credential: UpstreamCredential): Promise<void> {
  const { rows } = await pool.query<{ base_url: string }>('SELECT base_url FROM connectors WHERE id = $1', [id]);
  if (!rows[0]) throw new Error(`no connector ${id}`);
  const { sealed, fingerprint, type } = sealCredential(master, id, rows[0].base_url, credential);
  await pool.query(
    `UPDATE connectors SET credential_type = $2, credential_sealed = $3, credential_fingerprint = $4, credential_set_at = now(), updated_at = now() WHERE id = $1`,
    [id, type, sealed, fingerprint],
  );
  await tagConnectorRow(pool, rowIntegrityOf(pool), id);
}
