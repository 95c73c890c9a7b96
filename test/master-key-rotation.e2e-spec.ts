import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConnectedAccounts, accountSealContext, rewrapUnderCurrentMasterKey } from '@writ/accounts';
import { checkpointDigest, checkpointFromRow, CheckpointRow, CheckpointSigner, publicKeyFileFor, signCheckpoint } from '@writ/audit';
import { loadConfig } from '@writ/config';
import { credentialSealContext } from '@writ/connectors';
import {
  APPROVAL_INTEGRITY_COLUMNS,
  approvalIntegrityFieldsOf,
  type ApprovalIntegrityRow,
  ApprovalStore,
  IDENTITY_PROVIDER_INTEGRITY_COLUMNS,
  identityProviderIntegrityFieldsOf,
  type IdentityProviderIntegrityRow,
  POLICY_INTEGRITY_COLUMNS,
  policyIntegrityFieldsOf,
  type PolicyIntegrityRow,
  RowIntegrity,
} from '@writ/grants';
import { MasterKey } from '@writ/keys';
import { activateStoredPolicy, loadPolicyEngine } from '@writ/platform';
import { createTestDatabase, insertIdentityProviderRow, TestDatabase } from '@writ/testing';
import { auditVerify } from '../scripts/audit-verify-command';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { seedConnector, setConnectorCredential } from './support/seed';
import { masterKeyEnv, masterKeyInstances } from './support/master-key-instances';
import type { TestServices } from './support/test-services';

const SECRET = 'sk_live_rotation_payments_5e0c';
const KEY_A = Buffer.alloc(32, 21);
const KEY_B = Buffer.alloc(32, 22);
/** A key no instance is ever given: what it sealed opens nowhere. */
const KEY_LOST = Buffer.alloc(32, 23);
const IDP = 'https://idp.rotation.example';
const TOKEN_URL = 'http://127.0.0.1:9/token';
const LINK_CONTEXT = (id: string) => `writ/connect-link/v1\n${id}`;
const accountContext = (subject: string) => accountSealContext('codehost', TOKEN_URL, { issuer: IDP, subject });

/**
 * Rotation of WRIT_MASTER_KEY over one database: start under A, rotate to B with A as previous
 * (two instances at once), then B alone, then A alone. Every value sealed under A is re-sealed
 * under B exactly once, nothing stops working on the way, and checkpoints signed under A still
 * verify with A's public key.
 */
describe('master key rotation', () => {
  const a = new MasterKey(KEY_A);
  const b = new MasterKey(KEY_B);
  let db: TestDatabase;
  let dir: string;
  let checkpointFile: string;
  let payments: MockUpstream;
  let world: World;
  const logs: string[] = [];
  const checkpointEnv = () => ({ WRIT_AUDIT_CHECKPOINT_FILE: checkpointFile, WRIT_AUDIT_CHECKPOINT_EVERY: '100000', WRIT_AUDIT_CHECKPOINT_SECONDS: '3600' });
  const env = (current: Buffer, previous: Buffer[] = []) => ({ ...masterKeyEnv(current, previous), ...checkpointEnv() });
  const instances = masterKeyInstances({ db: () => db, logs, env: checkpointEnv });
  const { start, stop } = instances;
  /** A payout through the gateway: a token issued now (the signing key opens), the credential injected (it opens). */
  const payout = async (services: TestServices) => {
    const task = await createTask(services, world.orchestrator);
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    const before = payments.received.length;
    const response = await http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${exchanged.body.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount: 42000, currency: 'usd' }),
    });
    expect(response.status).toBe(201);
    expect(payments.received.slice(before).map((request) => request.headers.authorization)).toEqual([`Bearer ${SECRET}`]);
  };
  const checkpoint = async (services: TestServices) => {
    await services.runtime.audit.drain();
    await services.runtime.checkpointer!.trigger();
    await services.runtime.checkpointer!.trigger();
  };
  const query = async <T extends Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> => {
    const { Client } = await import('pg');
    const client = new Client({ connectionString: db.url });
    await client.connect();
    try {
      return (await client.query<T>(sql, params)).rows;
    } finally {
      await client.end();
    }
  };
  type RewrapTables = Record<string, { rewrapped: number; skipped: number; unopened: number }>;
  const rewrapEvents = () =>
    query<{ actor_type: string; actor_id: string; data: { previous_keys: number; tables: RewrapTables } }>(
      `SELECT actor_type, actor_id, data FROM audit_events WHERE type = 'master_key.rewrapped' ORDER BY seq`,
    );
  /** The events of re-wraps that re-sealed something (others only found rows left for later). */
  const rewraps = async () => (await rewrapEvents()).filter((event) => Object.values(event.data.tables).some((count) => count.rewrapped > 0));
  /** Every sealed value of the four tables, with the context it opens under. */
  const sealedValues = async () => [
    ...(await query<{ kid: string; private_sealed: Buffer }>('SELECT kid, private_sealed FROM signing_keys')).map((row) => ({
      row: `signing_keys:${row.kid}`,
      sealed: row.private_sealed,
      context: `signing_key:${row.kid}`,
    })),
    ...(
      await query<{ id: string; base_url: string; credential_sealed: Buffer }>(`SELECT id, base_url, credential_sealed FROM connectors WHERE id <> 'orphan'`)
    ).map((row) => ({ row: `connectors:${row.id}`, sealed: row.credential_sealed, context: credentialSealContext(row.id, row.base_url) })),
    ...(await query<{ id: string; verifier_sealed: Buffer }>('SELECT id, verifier_sealed FROM connect_links')).map((row) => ({
      row: `connect_links:${row.id}`,
      sealed: row.verifier_sealed,
      context: LINK_CONTEXT(row.id),
    })),
    ...(await query<{ user_subject: string; tokens_sealed: Buffer }>('SELECT user_subject, tokens_sealed FROM connected_accounts')).map((row) => ({
      row: `connected_accounts:${row.user_subject}`,
      sealed: row.tokens_sealed,
      context: accountContext(row.user_subject),
    })),
  ];
  /** `npm run audit:verify` against the database, with these variables. */
  const cli = (args: string[], vars: Record<string, string>) =>
    auditVerify(
      args,
      loadConfig({ WRIT_DATABASE_URL: db.url, WRIT_DATA_DIR: dir, WRIT_AUDIT_CHECKPOINT_FILE: checkpointFile, ...vars }, process.cwd(), {
        masterKeyOptional: true,
      }),
    );
  const keyFile = async (name: string, key: Buffer) => {
    const printed = await cli(['--print-public-keys'], { WRIT_MASTER_KEY: key.toString('base64') });
    expect(printed.code).toBe(0);
    const file = join(dir, name);
    await writeFile(file, JSON.stringify(printed.publicKeys));
    return file;
  };
  /** Whether the identity provider, the active policy and the approved approval verify under `key` alone. */
  const authorityRowsVerify = async (key: MasterKey) => {
    const integrity = new RowIntegrity(key);
    const [provider] = await query<IdentityProviderIntegrityRow & Record<string, unknown>>(
      `SELECT ${IDENTITY_PROVIDER_INTEGRITY_COLUMNS} FROM identity_providers`,
    );
    const [policy] = await query<PolicyIntegrityRow & Record<string, unknown>>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE active`);
    const [approval] = await query<ApprovalIntegrityRow & Record<string, unknown>>(
      `SELECT ${APPROVAL_INTEGRITY_COLUMNS} FROM approvals WHERE status = 'approved'`,
    );
    return [
      integrity.verifyIdentityProvider(identityProviderIntegrityFieldsOf(provider), provider.integrity_tag),
      integrity.verifyPolicy(policyIntegrityFieldsOf(policy), policy.integrity_tag),
      integrity.verifyApproval(approvalIntegrityFieldsOf(approval), approval.integrity_tag),
    ];
  };
  const checkpointKids = async () => (await query<{ kid: string }>('SELECT DISTINCT kid FROM audit_checkpoints')).map((row) => row.kid).sort();

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = await mkdtemp(join(tmpdir(), 'writ-rotation-'));
    checkpointFile = join(dir, 'audit-checkpoints.jsonl');
    payments = await startPaymentsUpstream(SECRET);
  });
  afterAll(async () => {
    await instances.closeAll();
    await payments?.close();
    await db?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('under key A: seals everything, signs a checkpoint', async () => {
    const services = await start(KEY_A);
    const { pool } = services.runtime;
    world = await seedWorld(pool, payments.url);
    await setConnectorCredential(pool, a, 'payments', { type: 'bearer', token: SECRET });
    await seedConnector(pool, 'codehost', undefined, 'http://127.0.0.1:9');
    await setConnectorCredential(pool, a, 'codehost', {
      type: 'oauth2_authorization_code',
      authorization_url: 'http://127.0.0.1:9/auth',
      token_url: TOKEN_URL,
      client_id: 'writ-upstream',
      client_secret: 'upstream-secret-rotation-1f3a',
      scopes: ['repo:read'],
    });
    // A connector whose credential was sealed under a key nobody has any more.
    await seedConnector(pool, 'orphan', undefined, 'http://127.0.0.1:9');
    await setConnectorCredential(pool, new MasterKey(KEY_LOST), 'orphan', { type: 'bearer', token: 'sk_orphan_value_8c2d' });
    await pool.query(
      `INSERT INTO connect_links (id, connector_id, user_issuer, user_subject, created_by, expires_at, opened_at, verifier_sealed)
       VALUES ('link-1', 'codehost', $1, 'alice', 'test', now() + interval '10 minutes', now(), $2)`,
      [IDP, a.seal('verifier-of-link-1', LINK_CONTEXT('link-1'))],
    );
    for (const subject of ['alice', 'bob']) {
      await pool.query(
        `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed)
         VALUES ($1, 'codehost', $2, $3, 'active', '{repo:read}', $4)`,
        [randomUUID(), IDP, subject, a.seal(JSON.stringify({ access_token: `at_${subject}`, refresh_token: `rt_${subject}` }), accountContext(subject))],
      );
    }
    // Bob's tokens are being refreshed (a live lease): a re-wrap must not overwrite what the refresh stores.
    await pool.query(
      `UPDATE connected_accounts SET refresh_lease_holder = $1, refresh_lease_expires_at = now() + interval '1 hour' WHERE user_subject = 'bob'`,
      [randomUUID()],
    );
    await payout(services);
    // Rows tagged under A that grant authority: a trusted identity provider, the active stored
    // policy (the policy file's own bundle, so that every instance runs the same version) and an approved approval.
    const { rowIntegrity, audit } = services.runtime;
    await insertIdentityProviderRow(pool, rowIntegrity, { issuer: IDP, jwksUri: `${IDP}/jwks` });
    const bundle = await readFile(services.policy.path);
    const engine = await loadPolicyEngine(bundle, null);
    await audit.recordWith(
      (client) => activateStoredPolicy(client, rowIntegrity, engine, bundle, null, 'upload', 'admin:rotation'),
      () => [],
    );
    const approvals = new ApprovalStore(pool, audit, rowIntegrity);
    const [task] = await query<{ id: string }>('SELECT id FROM tasks LIMIT 1');
    const requested = await approvals.request(
      {
        taskId: task.id,
        agentId: 'agent-1',
        connectorId: 'payments',
        authorizationDetails: PAYOUT_REQUEST,
        reasons: ['rotation'],
        policyVersion: engine.version,
        expiresAt: new Date(Date.now() + 600_000),
        // Asked with a key: the re-made tag covers it.
        dpopJkt: 'jkt-of-agent-1',
      },
      { type: 'agent', id: 'agent-1' },
    );
    expect((await approvals.decide(requested.id, 'approved', { type: 'admin', id: 'root' }, null)).changed).toBe(true);
    expect(await authorityRowsVerify(a)).toEqual([true, true, true]);
    await checkpoint(services);
    expect(await checkpointKids()).toEqual([a.checkpointSigningKey().kid]);
    for (const value of await sealedValues()) expect([value.row, a.unseal(value.sealed, value.context).length > 0]).toEqual([value.row, true]);
    // Before any rotation, nothing is re-sealed.
    expect(await rewrapEvents()).toEqual([]);
    await stop(services);
  }, 60_000);

  it('under B with A previous, two instances at once: everything still works and is re-sealed once', async () => {
    logs.length = 0;
    const [first, second] = await Promise.all([start(KEY_B, [KEY_A]), start(KEY_B, [KEY_A])]);
    await payout(first);
    await payout(second);
    const [event, ...later] = await rewrapEvents();
    expect([event]).toEqual([
      {
        actor_type: 'system',
        actor_id: 'master-key-rewrap',
        data: {
          previous_keys: 1,
          // The integrity tags of the registrations, the task and the bootstrap admin token written under A, made again under B.
          retagged: { agents: 2, orchestrators: 1, tasks: 1, admin_tokens: 1, connectors: 3, identity_providers: 1, policies: 1, approvals: 1 },
          tables: {
            signing_keys: { rewrapped: 2, skipped: 0, unopened: 0 },
            connectors: { rewrapped: 2, skipped: 0, unopened: 1 },
            connect_links: { rewrapped: 1, skipped: 0, unopened: 0 },
            connected_accounts: { rewrapped: 1, skipped: 1, unopened: 0 },
          },
        },
      },
    ]);
    // Operators see the rotation in the metrics: one previous key configured, and what the
    // re-seal of the instance that ran it did per table (the other instance's, if it ran
    // after, found only the rows left behind).
    const gauges = await Promise.all(
      [first, second].map(async (services) => {
        const { body } = await services.runtime.metrics.render();
        return body;
      }),
    );
    for (const text of gauges) expect(text).toMatch(/^writ_master_key_previous_keys 1$/m);
    const rows = (table: string, outcome: string) =>
      Math.max(
        ...gauges.map((text) =>
          Number(new RegExp(`^writ_master_key_rewrap_rows\\{table="${table}",outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0),
        ),
      );
    expect([rows('signing_keys', 'rewrapped'), rows('connectors', 'rewrapped'), rows('connectors', 'unopened'), rows('connect_links', 'rewrapped')]).toEqual([
      2, 2, 1, 1,
    ]);
    expect([rows('connected_accounts', 'rewrapped'), rows('connected_accounts', 'skipped')]).toEqual([1, 1]);
    // The other instance, had it taken the lock once the first was done, found bob's account only, still under its lease.
    for (const other of later) {
      expect(other.data.tables).toEqual({
        signing_keys: { rewrapped: 0, skipped: 0, unopened: 0 },
        connectors: { rewrapped: 0, skipped: 0, unopened: 1 },
        connect_links: { rewrapped: 0, skipped: 0, unopened: 0 },
        connected_accounts: { rewrapped: 0, skipped: 1, unopened: 0 },
      });
    }
    // Under B now, opened by B alone, except bob's (under its refresh lease).
    for (const value of await sealedValues()) {
      if (value.row === 'connected_accounts:bob') {
        expect(() => b.unseal(value.sealed, value.context)).toThrow();
        continue;
      }
      expect([value.row, b.unseal(value.sealed, value.context).length > 0]).toEqual([value.row, true]);
      expect(() => a.unseal(value.sealed, value.context)).toThrow();
    }
    // The fingerprint is B's; the unopened row is left exactly as it was, and named in a warning (never its value).
    const [stored] = await query<{ credential_fingerprint: string }>(`SELECT credential_fingerprint FROM connectors WHERE id = 'payments'`);
    expect(stored.credential_fingerprint).toBe(b.fingerprint(JSON.stringify({ type: 'bearer', token: SECRET })));
    const warning = logs.map((line) => JSON.parse(line)).find((line) => /open under no configured master key/.test(line.msg));
    expect(warning).toMatchObject({ table: 'connectors', rows: ['orphan'] });
    expect(logs.join('\n')).not.toContain(SECRET);
    expect(logs.join('\n')).not.toContain('sk_orphan_value_8c2d');

    // Two re-wraps racing over fresh values under A (a link opened by an instance still on A,
    // bob's refresh lease expired): one does the work, one event.
    await first.runtime.pool.query(`UPDATE connected_accounts SET refresh_lease_holder = NULL, refresh_lease_expires_at = NULL WHERE user_subject = 'bob'`);
    await first.runtime.pool.query(
      `INSERT INTO connect_links (id, connector_id, user_issuer, user_subject, created_by, expires_at, opened_at, verifier_sealed)
       VALUES ('link-2', 'codehost', $1, 'carol', 'test', now() + interval '10 minutes', now(), $2)`,
      [IDP, a.seal('verifier-of-link-2', LINK_CONTEXT('link-2'))],
    );
    const reports = await Promise.all(
      [first, second, first, second].map((services) => rewrapUnderCurrentMasterKey(services.runtime, services.apps[0].get(ConnectedAccounts))),
    );
    const done = reports.filter((report) => typeof report === 'object' && Object.values(report.tables).some((count) => count.rewrapped > 0));
    expect(done).toHaveLength(1);
    expect(await rewraps()).toHaveLength(2);
    expect((await rewraps())[1].data.tables).toMatchObject({ connect_links: { rewrapped: 1 }, connected_accounts: { rewrapped: 1, skipped: 0 } });
    for (const value of await sealedValues()) expect([value.row, b.unseal(value.sealed, value.context).length > 0]).toEqual([value.row, true]);
    // Every row that grants authority is tagged under B: A can be dropped.
    const tags = await query<{ tag: string }>(
      `SELECT integrity_tag AS tag FROM tasks UNION ALL SELECT integrity_tag FROM agents UNION ALL SELECT integrity_tag FROM orchestrators
       UNION ALL SELECT integrity_tag FROM admin_tokens`,
    );
    expect(tags.length).toBeGreaterThan(3);
    expect(tags.filter(({ tag }) => !b.isCurrentRowMac(tag))).toEqual([]);

    // Checkpoints: new ones are signed by B's key; the A-signed ones still verify everywhere.
    await checkpoint(first);
    expect(await checkpointKids()).toEqual([a.checkpointSigningKey().kid, b.checkpointSigningKey().kid].sort());
    const verified = await sendJson('GET', `${first.adminUrl}/v1/audit/verify?full=true`, undefined, first.adminToken);
    expect(verified.body).toMatchObject({ valid: true });
    expect((await cli([], env(KEY_B, [KEY_A]))).code).toBe(0);
    expect((await cli(['--public-key', publicKeyFileFor(checkpointFile)], {})).code).toBe(0);
    const published = await sendJson('GET', `${first.adminUrl}/v1/audit/checkpoints?limit=1`, undefined, first.adminToken);
    expect(published.body.public_key).toEqual(b.checkpointSigningKey().publicJwk);
    expect(published.body.previous_public_keys).toEqual([a.checkpointSigningKey().publicJwk]);
    // Investigators match values hashed before the rotation too: the payout of the first step stored acct_1 under A.
    const hashed = await sendJson('POST', `${first.adminUrl}/v1/audit/hash`, { value: 'acct_1' }, first.adminToken);
    expect(hashed.body).toEqual({ hash: b.auditHmac('acct_1'), algorithm: 'hmac-sha256', previous_hashes: [a.auditHmac('acct_1')] });
    const matches = async (hash: string) =>
      Number((await query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE data::text LIKE $1`, [`%${hash}%`]))[0].n);
    expect(await matches(a.auditHmac('acct_1'))).toBeGreaterThan(0);
    expect(await matches(b.auditHmac('acct_1'))).toBeGreaterThan(0);
    await Promise.all([stop(first), stop(second)]);
  }, 120_000);

  it('under B alone: everything still works, nothing more to re-seal; A-signed checkpoints verify offline with their key', async () => {
    const services = await start(KEY_B);
    await payout(services);
    expect(await rewraps()).toHaveLength(2);
    // The identity provider, the active policy and the approval were tagged again under B: they verify under B alone.
    expect(await authorityRowsVerify(b)).toEqual([true, true, true]);
    expect(await authorityRowsVerify(a)).toEqual([false, false, false]);
    for (const value of await sealedValues()) expect([value.row, b.unseal(value.sealed, value.context).length > 0]).toEqual([value.row, true]);
    const published = await sendJson('GET', `${services.adminUrl}/v1/audit/checkpoints?limit=1`, undefined, services.adminToken);
    expect(published.body.previous_public_keys).toEqual([]);
    await checkpoint(services);
    // With A dropped, checkpoints A signed are no longer trusted by the services or the CLI…
    const [firstA] = await query<{ seq: string }>('SELECT min(seq) AS seq FROM audit_checkpoints WHERE kid = $1', [a.checkpointSigningKey().kid]);
    const untrusted = {
      valid: false,
      invalid_checkpoint_seq: Number(firstA.seq),
      reason: expect.stringMatching(/in the database is not signed by a Writ checkpoint key/),
    };
    const verified = await sendJson('GET', `${services.adminUrl}/v1/audit/verify?full=true`, undefined, services.adminToken);
    expect(verified.body).toMatchObject(untrusted);
    await stop(services);
    const withoutA = await cli([], env(KEY_B));
    expect(withoutA).toMatchObject({ code: 1, result: untrusted });
    // …but verify offline with A's public key (printed from A, or kept beside the checkpoint file).
    const [fileA, fileB] = [await keyFile('a.json', KEY_A), await keyFile('b.json', KEY_B)];
    expect((await cli(['--public-key', fileA, '--public-key', fileB], {})).code).toBe(0);
    expect((await cli(['--public-key', fileB], {})).code).toBe(1);
    expect((await cli(['--public-key', publicKeyFileFor(checkpointFile)], {})).code).toBe(0);
  }, 60_000);

  it("with A's public key in WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: A-signed checkpoints verify again, forged ones still do not", async () => {
    const [fileA, fileB] = [join(dir, 'a.json'), join(dir, 'b.json')];
    const trusted = { WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: fileA };
    const services = await start(KEY_B, [], trusted);
    const verify = async (full = false) =>
      (await sendJson('GET', `${services.adminUrl}/v1/audit/verify${full ? '?full=true' : ''}`, undefined, services.adminToken)).body;
    const stored = async () => (await query<CheckpointRow & Record<string, unknown>>('SELECT * FROM audit_checkpoints ORDER BY seq')).map(checkpointFromRow);
    const checkpoints = await stored();
    expect(new Set(checkpoints.map((checkpoint) => checkpoint.kid))).toEqual(new Set([a.checkpointSigningKey().kid, b.checkpointSigningKey().kid]));
    expect(await verify(true)).toMatchObject({ valid: true, checkpoints_verified: checkpoints.length });
    expect(await cli([], { ...env(KEY_B), ...trusted })).toMatchObject({ code: 0, result: { valid: true, checkpoints_verified: checkpoints.length } });
    // Listed keys come after the current one; printing the keys still gives the master key's only.
    const published = await sendJson('GET', `${services.adminUrl}/v1/audit/checkpoints?limit=1`, undefined, services.adminToken);
    expect(published.body.public_key).toEqual(b.checkpointSigningKey().publicJwk);
    expect(published.body.previous_public_keys).toEqual([a.checkpointSigningKey().publicJwk]);
    expect((await cli(['--print-public-keys'], { ...env(KEY_B), ...trusted })).publicKeys).toEqual({ keys: [b.checkpointSigningKey().publicJwk] });
    // B's own key listed too changes nothing; offline verification takes the --public-key files only.
    expect((await cli([], { ...env(KEY_B), WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: `${fileB},${fileA}` })).code).toBe(0);
    expect((await cli(['--public-key', fileB], { ...env(KEY_B), ...trusted })).code).toBe(1);
    // New checkpoints are still signed by B alone.
    await payout(services);
    await checkpoint(services);
    const signed = await stored();
    expect(signed.length).toBeGreaterThan(checkpoints.length);
    expect(signed.slice(checkpoints.length).map((checkpoint) => checkpoint.kid)).toEqual(
      signed.slice(checkpoints.length).map(() => b.checkpointSigningKey().kid),
    );
    expect(await verify()).toMatchObject({ valid: true });

    // A database superuser appends a checkpoint over new events, signed with a key neither
    // configured nor listed: under its own kid, and under A's (the listed key's) kid. And with
    // A's own private key (A leaked: why it was dropped): A is trusted only for what it signed
    // before B's checkpoints.
    const lost = new MasterKey(KEY_LOST).checkpointSigningKey();
    const notTrusted = /in the database is not signed by a Writ checkpoint key/;
    const forgers: Array<[CheckpointSigner, RegExp, boolean]> = [
      [lost, notTrusted, true],
      [{ kid: a.checkpointSigningKey().kid, publicJwk: a.checkpointSigningKey().publicJwk, sign: (data) => lost.sign(data) }, notTrusted, true],
      [a.checkpointSigningKey(), /is signed by a retired key \(WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS\) after one signed by a current master key/, false],
    ];
    for (const [forger, reason, offlineRejects] of forgers) {
      await services.runtime.audit.record({ type: 'test.event', outcome: 'info', actor: { type: 'system', id: 'spec' }, data: { forger: forger.kid } });
      await services.runtime.audit.drain();
      const [head] = await query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_chain_head');
      const last = (await stored()).pop()!;
      const forged = signCheckpoint({ seq: Number(head.seq), hash: head.hash, prev: checkpointDigest(last), time: new Date().toISOString() }, forger);
      await query('INSERT INTO audit_checkpoints (seq, hash, prev, signed_at, kid, signature) VALUES ($1, $2, $3, $4, $5, $6)', [
        forged.seq,
        forged.hash,
        forged.prev,
        forged.time,
        forged.kid,
        forged.sig,
      ]);
      const rejected = {
        valid: false,
        invalid_checkpoint_seq: forged.seq,
        reason: expect.stringMatching(reason),
      };
      expect(await verify()).toMatchObject(rejected);
      expect(await cli([], { ...env(KEY_B), ...trusted })).toMatchObject({ code: 1, result: rejected });
      // Offline, every key file given is trusted everywhere (docs/security.md): A's own signature passes there.
      if (offlineRejects) {
        expect(await cli(['--public-key', fileA, '--public-key', fileB], {})).toMatchObject({ code: 1, result: rejected });
      }
      // Taken out again (triggers off, as the superuser could), so that the next forgery stands alone.
      await query(`BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM audit_checkpoints WHERE seq = ${forged.seq}; COMMIT`);
      expect(await verify()).toMatchObject({ valid: true });
    }
    await stop(services);
  }, 60_000);

  it('under A alone after the re-wrap: refuses to start, cleanly', async () => {
    await expect(start(KEY_A)).rejects.toThrow(/cannot load the signing keys \(is WRIT_MASTER_KEY the one they were sealed with\?\)/);
    // A tampered key id opens under no key.
    const [row] = await query<{ kid: string; private_sealed: Buffer }>(`SELECT kid, private_sealed FROM signing_keys WHERE status = 'active'`);
    const tampered = Buffer.concat([a.currentSealPrefix(), row.private_sealed.subarray(9)]);
    expect(() => new MasterKey(KEY_B, [KEY_A]).unseal(tampered, `signing_key:${row.kid}`)).toThrow();
    expect(() => new MasterKey(KEY_A, [KEY_B]).unseal(tampered, `signing_key:${row.kid}`)).toThrow();
  }, 60_000);
});
