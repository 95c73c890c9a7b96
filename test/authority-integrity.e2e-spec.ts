import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { Pool } from 'pg';
import { clientAuthFields, insertIdentityProviderRow } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { eventually } from './support/eventually';
import { createTask, exchangeFields, payoutUpTo, requireApprovalAbove, seedWorld, tasksToken, World } from './support/grant-flow';
import { dpopKey, proof } from './support/dpop';
import { postForm, sendJson, tokenRequest } from './support/oauth-client';
import { integrityFailures, loggedIntegrityRefusals, scrape } from './support/metrics';
import { startTestServices, TestServices } from './support/test-services';

/** The error log lines naming a refused row of `table` (table and id only). */
function refusalsIn(logs: string[], table: string, id: string) {
  return logs
    .map((line) => JSON.parse(line) as { level: number; table?: string; id?: string; msg: string })
    .filter((line) => line.level === 50 && line.table === table && line.id === id && /integrity tag/.test(line.msg));
}

/** An identity provider's ES256 key (`kid` `k1`) served as a JWKS on loopback (not registered anywhere). */
async function serveKeys(): Promise<{ key: CryptoKey; jwksUri: string; server: Server }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const keySet = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(keySet));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { key: privateKey, jwksUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`, server };
}

/** A user token of `issuer` for `subject`, signed with `key`. */
function userToken(issuer: string, subject: string, key: CryptoKey): Promise<string> {
  return new SignJWT({ sub: subject }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(issuer).setAudience('writ').setExpirationTime('5m').sign(key);
}

describe('integrity tags of trusted identity providers and approvals against a database administrator', () => {
  let services: TestServices;
  let world: World;
  let dba: Pool;
  let honest: Awaited<ReturnType<typeof serveKeys>>;
  let attacker: Awaited<ReturnType<typeof serveKeys>>;
  const logs: string[] = [];
  const refusals = (table: string, id: string) => refusalsIn(logs, table, id);

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp, logSink: (line) => logs.push(line) });
    world = await seedWorld(services.runtime.pool);
    dba = new Pool({ connectionString: services.db.url, max: 2 });
    [honest, attacker] = await Promise.all([serveKeys(), serveKeys()]);
    // Payouts above 100.00 USD need a human's approval.
    await requireApprovalAbove(services, 10000);
  });
  afterAll(async () => {
    for (const { server } of [honest, attacker]) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await dba.end();
    await services.close();
  });

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);
  /** Declares a task acting for the user `proof` names (a user token, or an asserted user). */
  const declare = async (proof: Record<string, unknown>) =>
    sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      { agent_id: 'agent-1', purpose: 'read the user profile', allowed: payoutUpTo(5000), ttl_seconds: 600, ...proof },
      await tasksToken(services, world.orchestrator),
    );
  const expectUserRefused = (response: { status: number; body: { fields?: Array<{ field: string; message: string }> } }, field: string) => {
    expect(response.status).toBe(400);
    expect(response.body.fields).toEqual([expect.objectContaining({ field })]);
  };

  describe('identity providers', () => {
    it("refuses the tokens of an identity provider the DBA inserted with their own keys (a task acting for another user's account)", async () => {
      const issuer = 'https://idp-inserted.example';
      await dba.query(`INSERT INTO identity_providers (issuer, jwks_uri, audience, asserting_orchestrators) VALUES ($1, $2, 'writ', '{orch-1}')`, [
        issuer,
        attacker.jwksUri,
      ]);
      const forged = await declare({ user_token: await userToken(issuer, 'victim', attacker.key) });
      expectUserRefused(forged, 'user_token');
      expect(forged.body.fields[0].message).toContain('untrusted_issuer');
      // Nor may the orchestrator it names assert the issuer's users.
      expectUserRefused(await declare({ user: { iss: issuer, sub: 'victim' } }), 'user');
      expect(refusals('identity_providers', issuer).length).toBeGreaterThan(0);
      expect((await dba.query(`SELECT count(*)::int AS n FROM tasks WHERE user_subject = 'victim'`)).rows).toEqual([{ n: 0 }]);
    });

    it("refuses a registered provider after the DBA points its JWKS at their keys or adds an asserting orchestrator; Writ's own row works", async () => {
      const untouched = 'https://idp-honest.example';
      await insertIdentityProviderRow(services.runtime.pool, services.runtime.rowIntegrity, { issuer: untouched, jwksUri: honest.jwksUri });
      expect((await declare({ user_token: await userToken(untouched, 'alice', honest.key) })).status).toBe(201);

      const edited = 'https://idp-edited.example';
      await insertIdentityProviderRow(services.runtime.pool, services.runtime.rowIntegrity, { issuer: edited, jwksUri: honest.jwksUri });
      await dba.query(`UPDATE identity_providers SET jwks_uri = $2, asserting_orchestrators = '{orch-1}' WHERE issuer = $1`, [edited, attacker.jwksUri]);
      expectUserRefused(await declare({ user_token: await userToken(edited, 'alice', attacker.key) }), 'user_token');
      expectUserRefused(await declare({ user: { iss: edited, sub: 'alice' } }), 'user');
      expect(refusals('identity_providers', edited).length).toBeGreaterThan(0);
    });

    it("refuses a provider the DBA inserted with a tag copied from another provider's row or from another table", async () => {
      const source = (await dba.query<{ integrity_tag: string }>(`SELECT integrity_tag FROM identity_providers WHERE issuer = 'https://idp-honest.example'`))
        .rows[0];
      const agentTag = (await dba.query<{ integrity_tag: string }>(`SELECT integrity_tag FROM agents WHERE id = 'agent-1'`)).rows[0];
      for (const [issuer, tag] of [
        ['https://idp-copied.example', source.integrity_tag],
        ['https://idp-copied-agent.example', agentTag.integrity_tag],
      ]) {
        await dba.query(
          `INSERT INTO identity_providers (issuer, jwks_uri, audience, asserting_orchestrators, integrity_tag) VALUES ($1, $2, 'writ', '{}', $3)`,
          [issuer, attacker.jwksUri, tag],
        );
        expectUserRefused(await declare({ user_token: await userToken(issuer, 'victim', attacker.key) }), 'user_token');
      }
    });

    it('trusts a provider registered through the admin API (tagged as written)', async () => {
      const issuer = 'https://sso.admin-registered.example.com';
      const created = await admin('POST', '/v1/identity-providers', {
        issuer,
        jwks_uri: `${issuer}/jwks`,
        audience: 'writ',
        asserting_orchestrators: ['orch-1'],
      });
      expect(created.status).toBe(201);
      expect((await declare({ user: { iss: issuer, sub: 'carol' } })).status).toBe(201);
    });
  });

  describe('approvals', () => {
    const exchange = (taskToken: string, details: unknown, extra: Record<string, string> = {}) =>
      tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, details, extra));
    /** A task with a pending approval for a 420.00 payout; returns the task token and the approval id. */
    const pendingApproval = async () => {
      const task = await createTask(services, world.orchestrator);
      const pending = await exchange(task.task_token, payoutUpTo(42000));
      expect(pending.body.error).toBe('authorization_pending');
      return { taskToken: task.task_token, approvalId: pending.body.approval_id as string };
    };
    const expectNoCredential = async (taskToken: string, approvalId: string) => {
      const refused = await exchange(taskToken, payoutUpTo(42000), { approval_id: approvalId });
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('access_denied');
      expect(refused.body.access_token).toBeUndefined();
      // The refused consumption rolled back: the approval is not marked used.
      expect((await dba.query(`SELECT status FROM approvals WHERE id = $1`, [approvalId])).rows).toEqual([{ status: 'approved' }]);
      expect(refusals('approvals', approvalId).length).toBeGreaterThan(0);
    };

    it('refuses an approval the DBA flipped from pending to approved', async () => {
      const { taskToken, approvalId } = await pendingApproval();
      await dba.query(`UPDATE approvals SET status = 'approved', decided_at = now(), decided_by = 'admin:root' WHERE id = $1`, [approvalId]);
      await expectNoCredential(taskToken, approvalId);
    });

    it("refuses an approval the DBA flipped with another approval's decision and tag copied onto it", async () => {
      const genuine = await pendingApproval();
      expect((await admin('POST', `/v1/approvals/${genuine.approvalId}/approve`, {})).status).toBe(200);
      const { taskToken, approvalId } = await pendingApproval();
      await dba.query(
        `UPDATE approvals a SET status = 'approved', decided_at = g.decided_at, decided_by = g.decided_by, integrity_tag = g.integrity_tag
           FROM approvals g WHERE a.id = $1 AND g.id = $2`,
        [approvalId, genuine.approvalId],
      );
      await expectNoCredential(taskToken, approvalId);
      // The genuine one still buys its credential, once.
      expect((await exchange(genuine.taskToken, payoutUpTo(42000), { approval_id: genuine.approvalId })).status).toBe(200);
    });

    it('refuses an approval the DBA set back from used to approved, to buy its credential twice', async () => {
      const { taskToken, approvalId } = await pendingApproval();
      expect((await admin('POST', `/v1/approvals/${approvalId}/approve`, {})).status).toBe(200);
      expect((await exchange(taskToken, payoutUpTo(42000), { approval_id: approvalId })).status).toBe(200);
      await dba.query(`UPDATE approvals SET status = 'approved', used_at = NULL WHERE id = $1`, [approvalId]);
      await expectNoCredential(taskToken, approvalId);
    });

    it('refuses an approved approval whose deadline the DBA extended', async () => {
      const { taskToken, approvalId } = await pendingApproval();
      expect((await admin('POST', `/v1/approvals/${approvalId}/approve`, {})).status).toBe(200);
      await dba.query(`UPDATE approvals SET expires_at = expires_at + interval '1 day' WHERE id = $1`, [approvalId]);
      await expectNoCredential(taskToken, approvalId);
    });

    it('refuses an approved approval the DBA unbound from the DPoP key it was asked with, to take it as a bearer credential', async () => {
      const key = await dpopKey();
      const tokenUrl = `${services.issuer}/oauth2/token`;
      const task = await createTask(services, world.orchestrator);
      const pending = await postForm(
        tokenUrl,
        { ...exchangeFields(task.task_token, payoutUpTo(42000)), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
        { dpop: await proof(key, 'POST', tokenUrl) },
      );
      expect(pending.body.error).toBe('authorization_pending');
      const approvalId: string = pending.body.approval_id;
      expect((await admin('POST', `/v1/approvals/${approvalId}/approve`, {})).status).toBe(200);
      await dba.query(`UPDATE approvals SET dpop_jkt = NULL WHERE id = $1`, [approvalId]);
      await expectNoCredential(task.task_token, approvalId);
    });

    it('refuses an approval the DBA inserted as approved', async () => {
      const task = await createTask(services, world.orchestrator);
      const { rows } = await dba.query<{ id: string }>(
        `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, expires_at, decided_at, decided_by)
         VALUES (gen_random_uuid(), $1, 'agent-1', 'payments', $2, '[]', $3, 'approved', now() + interval '10 minutes', now(), 'admin:root') RETURNING id`,
        [task.task_id, JSON.stringify(payoutUpTo(42000)), services.policy.current().version],
      );
      await expectNoCredential(task.task_token, rows[0].id);
    });
  });

  it('counts every refusal it logged in writ_integrity_failures_total, by table', async () => {
    const counted = integrityFailures(await scrape(services.adminUrl));
    expect(counted).toEqual(loggedIntegrityRefusals(logs));
    expect(Object.keys(counted).sort()).toEqual(['approvals', 'identity_providers']);
  });
});

describe('integrity tags of the active stored policy against a database administrator', () => {
  let services: TestServices;
  let dba: Pool;
  let world: World;
  const logs: string[] = [];
  const refusals = (table: string, id: string) => refusalsIn(logs, table, id);
  /** Versions activated by the admin: without approvals (`open`), and with approvals above 100.00 (`strict`). */
  let open: string;
  let strict: string;
  let openData: Record<string, unknown>;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp, logSink: (line) => logs.push(line) });
    world = await seedWorld(services.runtime.pool);
    dba = new Pool({ connectionString: services.db.url, max: 2 });
    const data = JSON.parse(JSON.stringify(services.policy.current().data)) as { writ: { config: Record<string, unknown> } };
    data.writ.config.quarantine_after = 7;
    openData = JSON.parse(JSON.stringify(data)) as Record<string, unknown>;
    const opened = await admin('PUT', '/v1/policies/data', { data });
    expect(opened.status).toBe(200);
    open = opened.body.version;
    data.writ.config.approval = { payments: { constraint: 'amount_max', above: 10000, actions: ['payouts.create'] } };
    const tightened = await admin('PUT', '/v1/policies/data', { data });
    expect(tightened.status).toBe(200);
    strict = tightened.body.version;
    await eventually(
      () => services.policy.current().version,
      (version) => version === strict,
    );
  });
  afterAll(async () => {
    await dba.end();
    await services.close();
  });

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);
  const payout = async () => {
    const task = await createTask(services, world.orchestrator);
    return tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(42000)));
  };
  /** Waits until this instance has looked at the forged active row (refused it, or, before tags, installed it). */
  const looked = (version: string) =>
    eventually(
      () => refusals('policies', version).length > 0 || services.policy.current().version === version,
      (seen) => seen,
    );
  const expectUnavailable = async () => {
    const response = await payout();
    expect(response.status).toBe(503);
    expect(response.body.error).toBe('temporarily_unavailable');
    expect(response.headers.get('retry-after')).toBeTruthy();
    expect(response.body.access_token).toBeUndefined();
  };
  /** Puts back the genuine active row (the strict one, tag untouched by the DBA). */
  const restore = async () => {
    await dba.query(`UPDATE policies SET active = false WHERE active`);
    await dba.query(`UPDATE policies SET active = true WHERE version = $1`, [strict]);
    await eventually(
      () => services.policy.current().version,
      (version) => version === strict,
    );
  };

  it('holds a large payout for approval under the policy the admin activated', async () => {
    expect((await payout()).body.error).toBe('authorization_pending');
  });

  it('does not load an earlier policy the DBA made active again by hand (asking for no approval): no credential, 503 with Retry-After', async () => {
    await dba.query(`UPDATE policies SET active = false WHERE active`);
    await dba.query(`UPDATE policies SET active = true WHERE version = $1`, [open]);
    await looked(open);
    // Whatever this instance runs (the strict policy, or its file while no row was active), never the one made active by hand.
    expect(services.policy.current().version).not.toBe(open);
    expect(refusals('policies', open).length).toBeGreaterThan(0);
    await expectUnavailable();
    await restore();
    expect((await payout()).body.error).toBe('authorization_pending');
  });

  it('does not load a policy the DBA inserted, untagged or with the active policy’s tag copied onto it', async () => {
    const bundle = await readFile(services.policy.path);
    const tag = (await dba.query<{ integrity_tag: string }>(`SELECT integrity_tag FROM policies WHERE version = $1`, [strict])).rows[0].integrity_tag;
    for (const [version, copied] of [
      ['forged-untagged', null],
      ['forged-copied', tag],
    ] as const) {
      await dba.query(`UPDATE policies SET active = false WHERE active`);
      await dba.query(
        `INSERT INTO policies (version, bundle, data, source, loaded_by, active, integrity_tag) VALUES ($1, $2, $3, 'upload', 'admin:root', true, $4)`,
        [version, bundle, JSON.stringify(openData), copied],
      );
      await looked(version);
      expect(services.policy.current().version).not.toBe(version);
      await expectUnavailable();
      // An admin's data update over it would tag (launder) the forged bundle: refused, nothing changed.
      const laundered = await admin('PUT', '/v1/policies/data', { data: openData });
      expect(laundered.status).toBe(409);
      expect((await dba.query(`SELECT version FROM policies WHERE active`)).rows).toEqual([{ version }]);
      await restore();
    }
  });

  it('does not load the active policy after the DBA edits its data in place (same version), on an instance installing it', async () => {
    await dba.query(`UPDATE policies SET data = $2 WHERE version = $1`, [strict, JSON.stringify(openData)]);
    // As a restarted instance: back on its policy file, it installs the active row, and refuses it.
    await services.policy.reload();
    await looked(strict);
    expect(refusals('policies', strict).length).toBeGreaterThan(0);
    await expectUnavailable();
  });

  it('activates anew, through the admin API, a version whose stored bundle or data the DBA changed: what was loaded is stored and tagged', async () => {
    // Re-activating the strict policy writes its data again over the DBA's edit.
    const data = JSON.parse(JSON.stringify(openData)) as { writ: { config: Record<string, unknown> } };
    data.writ.config.approval = { payments: { constraint: 'amount_max', above: 10000, actions: ['payouts.create'] } };
    await admin('DELETE', '/v1/policies/active');
    const again = await admin('PUT', '/v1/policies/data', { data });
    expect(again.status).toBe(200);
    expect(again.body.version).toBe(strict);
    await eventually(
      () => services.policy.current().version,
      (version) => version === strict,
    );
    expect((await payout()).body.error).toBe('authorization_pending');
    expect((await dba.query<{ data: unknown }>(`SELECT data FROM policies WHERE version = $1`, [strict])).rows[0].data).toEqual(data);
  });

  it('counts every refusal it logged in writ_integrity_failures_total, by table', async () => {
    const counted = integrityFailures(await scrape(services.adminUrl));
    expect(counted).toEqual(loggedIntegrityRefusals(logs));
    expect(Object.keys(counted)).toEqual(['policies']);
  });
});
