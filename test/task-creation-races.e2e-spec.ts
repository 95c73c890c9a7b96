import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { Pool } from 'pg';
import { clientAuthFields, createClientKey, insertIdentityProviderRow, jwksOf, rowIntegrityOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { PAYOUT_ALLOWED, tasksToken } from './support/grant-flow';
import { http, postForm, sendJson, TestClient, TestResponse } from './support/oauth-client';
import { seedAgent, seedConnector, seedOrchestrator } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const AUDIENCE = 'writ-tasks';

/** A request for one identity provider's keys, held until the test lets it through. */
interface Hold {
  /** Settles when the keys are asked for: the create passed its guard and checks and now waits. */
  asked: Promise<void>;
  open(): void;
}

/**
 * Identity providers on loopback whose JWKS endpoint (`/<name>/jwks`) answers only when the
 * test opens its hold: a `POST /v1/tasks` with a `user_token` of that provider is held between
 * its checks (the guard, the agent, `allowed_agents`) and its commit, for as long as the test
 * needs to change the orchestrator or the agent through the admin API.
 */
class HeldIdentityProviders {
  private readonly holds = new Map<string, { opened: Promise<void>; open: () => void; onAsked: () => void; asked: Promise<void> }>();
  private server!: Server;
  url = '';
  private jwk: Record<string, unknown> = {};
  private privateKey!: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

  async start(): Promise<void> {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    this.privateKey = privateKey;
    this.jwk = { ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' };
    this.server = createServer((request, response) => void this.answer(request, response));
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** Holds the keys of provider `name` until {@link Hold.open}. */
  hold(name: string): Hold {
    const entry = this.entry(name);
    return { asked: entry.asked, open: entry.open };
  }

  /** A user token of provider `name` for Writ. */
  userToken(name: string, subject: string): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'idp-1' })
      .setIssuer(`${this.url}/${name}`)
      .setAudience(AUDIENCE)
      .setSubject(subject)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(this.privateKey);
  }

  private entry(name: string) {
    let entry = this.holds.get(name);
    if (!entry) {
      let open!: () => void;
      let onAsked!: () => void;
      const opened = new Promise<void>((resolve) => (open = resolve));
      const asked = new Promise<void>((resolve) => (onAsked = resolve));
      entry = { opened, open, onAsked, asked };
      this.holds.set(name, entry);
    }
    return entry;
  }

  private async answer(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const match = /^\/([a-z0-9-]+)\/jwks$/.exec(request.url ?? '');
    if (!match) {
      response.writeHead(404).end();
      return;
    }
    const entry = this.entry(match[1]);
    entry.onAsked();
    await entry.opened;
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [this.jwk] }));
  }
}

/** One orchestrator serving two agents, trusted with users of its own held identity provider. */
interface Scene {
  name: string;
  orchestrator: TestClient;
  agent: TestClient;
  token: string;
  userToken: string;
}

/**
 * Task creation against concurrent admin changes: what the Tasks API guard and the create
 * checked (token unrevoked, orchestrator active, agent in `allowed_agents`, agent active) must
 * still hold when the task commits. A create held between its checks and its commit (its user's
 * identity provider slow to answer) while an admin suspends, narrows or deletes the orchestrator,
 * or suspends or deletes the agent, is refused as a fresh request would be, and leaves nothing.
 */
describe('task creation racing admin changes', () => {
  let services: TestServices;
  let second: TestServices;
  let pool: Pool;
  const providers = new HeldIdentityProviders();

  beforeAll(async () => {
    // A window longer than the suite: the failed-authentication counts read below stay in one window.
    const env = { WRIT_THROTTLE_WINDOW_SECONDS: '3600' };
    services = await startTestServices({ admin: createAdminApp, env });
    second = await startSecondInstance(services, { env });
    pool = services.runtime.pool;
    await seedConnector(pool, 'payments');
    await providers.start();
  });
  afterAll(async () => {
    await second?.close();
    await services?.close();
    await providers.close();
  });

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);

  async function scene(name: string): Promise<Scene> {
    const agent = await seedAgent(pool, `${name}-agent`);
    await seedAgent(pool, `${name}-other`);
    const orchestrator = await seedOrchestrator(pool, `${name}-orch`, [agent.id, `${name}-other`]);
    await insertIdentityProviderRow(pool, rowIntegrityOf(pool), {
      issuer: `${providers.url}/${name}`,
      jwksUri: `${providers.url}/${name}/jwks`,
      audience: AUDIENCE,
    });
    return { name, orchestrator, agent, token: await tasksToken(services, orchestrator), userToken: await providers.userToken(name, `${name}-user`) };
  }

  function create(s: Scene, withUser: boolean, instance = services.issuer): Promise<TestResponse> {
    return sendJson(
      'POST',
      `${instance}/v1/tasks`,
      {
        agent_id: s.agent.id,
        purpose: 'pay invoice INV-42',
        allowed: PAYOUT_ALLOWED,
        ttl_seconds: 600,
        ...(withUser ? { user_token: s.userToken } : {}),
      },
      s.token,
    );
  }

  /** Sends a create, waits until it is held at the identity provider, runs `change`, then lets the create go on. */
  async function heldCreate(s: Scene, change: () => Promise<TestResponse>): Promise<TestResponse> {
    const hold = providers.hold(s.name);
    const pending = create(s, true);
    await Promise.race([
      hold.asked,
      pending.then((answer) => {
        throw new Error(`the create answered before it was held: ${answer.status} ${answer.text}`);
      }),
    ]);
    const changed = await change();
    expect([200, 204]).toContain(changed.status);
    hold.open();
    return pending;
  }

  async function tasksOf(orchestratorId: string): Promise<Array<{ id: string; status: string }>> {
    const { rows } = await pool.query<{ id: string; status: string }>('SELECT id::text AS id, status FROM tasks WHERE orchestrator_id = $1', [orchestratorId]);
    return rows;
  }

  async function createdEvents(orchestratorId: string): Promise<Array<{ seq: number; task_id: string }>> {
    const { rows } = await pool.query<{ seq: string; task_id: string }>(
      `SELECT seq, task_id FROM audit_events WHERE type = 'task.created' AND actor_id = $1 ORDER BY seq`,
      [orchestratorId],
    );
    return rows.map((row) => ({ seq: Number(row.seq), task_id: row.task_id }));
  }

  async function expectNothingCreated(s: Scene, answer: TestResponse): Promise<void> {
    expect(answer.body.task_token).toBeUndefined();
    expect(answer.text).not.toMatch(/eyJ/);
    expect(await tasksOf(s.orchestrator.id)).toEqual([]);
    expect(await createdEvents(s.orchestrator.id)).toEqual([]);
  }

  /** Failed authentications counted for this suite's source address (127.0.0.1) by the OAuth endpoints and the Tasks API. */
  async function oauthFailures(): Promise<number> {
    const { rows } = await pool.query<{ n: string }>(`SELECT coalesce(sum(count), 0) AS n FROM throttle_failures WHERE key = 'oauth|source|127.0.0.1'`);
    return Number(rows[0].n);
  }

  function expectInvalidToken(answer: TestResponse): void {
    expect(answer.status).toBe(401);
    expect(answer.body.error).toBe('invalid_token');
    expect(answer.headers.get('www-authenticate')).toMatch(/invalid_token/);
  }

  function expectAgentRefused(answer: TestResponse, message: RegExp): void {
    expect(answer.status).toBe(400);
    expect(answer.body.fields).toEqual([expect.objectContaining({ field: 'agent_id', message: expect.stringMatching(message) })]);
  }

  it('creates the task when nothing changes while it is held (the hold itself is harmless)', async () => {
    const s = await scene('steady');
    const answer = await heldCreate(s, () => admin('GET', `/v1/orchestrators/${s.orchestrator.id}`));
    expect(answer.status).toBe(201);
    expect(await tasksOf(s.orchestrator.id)).toEqual([{ id: answer.body.task_id, status: 'active' }]);
    const { rows } = await pool.query('SELECT user_subject FROM tasks WHERE id = $1', [answer.body.task_id]);
    expect(rows[0].user_subject).toBe('steady-user');
  });

  it('refuses a create held past the suspension of its orchestrator: 401, no task, no task token', async () => {
    const s = await scene('suspend-orch');
    const failures = await oauthFailures();
    const answer = await heldCreate(s, () => admin('PATCH', `/v1/orchestrators/${s.orchestrator.id}`, { status: 'suspended' }));
    expectInvalidToken(answer);
    await expectNothingCreated(s, answer);
    // Counted toward the failed-authentication throttle, as the guard's own refusal of that token would be.
    expect((await oauthFailures()) - failures).toBe(1);
  });

  it('refuses a create held past the deletion of its orchestrator', async () => {
    const s = await scene('delete-orch');
    const answer = await heldCreate(s, () => admin('DELETE', `/v1/orchestrators/${s.orchestrator.id}`));
    expectInvalidToken(answer);
    await expectNothingCreated(s, answer);
  });

  it('refuses a create held past the revocation of its Tasks API token (RFC 7009)', async () => {
    const s = await scene('revoke-token');
    const failures = await oauthFailures();
    const answer = await heldCreate(s, async () =>
      postForm(`${services.issuer}/oauth2/revoke`, { token: s.token, ...(await clientAuthFields(s.orchestrator.id, s.orchestrator.key, services.issuer)) }),
    );
    expectInvalidToken(answer);
    await expectNothingCreated(s, answer);
    expect((await oauthFailures()) - failures).toBe(1);
  });

  it('refuses a create held past the removal of its agent from allowed_agents', async () => {
    const s = await scene('narrow');
    const answer = await heldCreate(s, () => admin('PATCH', `/v1/orchestrators/${s.orchestrator.id}`, { allowed_agents: ['narrow-other'] }));
    expectAgentRefused(answer, /may not create tasks for that agent/);
    await expectNothingCreated(s, answer);
  });

  it('refuses a create held past the suspension of its agent', async () => {
    const s = await scene('suspend-agent');
    const failures = await oauthFailures();
    const answer = await heldCreate(s, () => admin('PATCH', `/v1/agents/${s.agent.id}`, { status: 'suspended' }));
    expectAgentRefused(answer, /suspended/);
    await expectNothingCreated(s, answer);
    // Not an authentication failure (the same 400 at the request's start is not counted either).
    expect((await oauthFailures()) - failures).toBe(0);
  });

  it('refuses a create held past the deletion of its agent', async () => {
    const s = await scene('delete-agent');
    const answer = await heldCreate(s, () => admin('DELETE', `/v1/agents/${s.agent.id}`));
    expectAgentRefused(answer, /no such agent/);
    await expectNothingCreated(s, answer);
  });

  it("never hands a deleted orchestrator's tasks to one registered again under its id", async () => {
    const s = await scene('reused-id');
    const body = JSON.stringify({ agent_id: s.agent.id, purpose: 'pay invoice INV-42', allowed: PAYOUT_ALLOWED, ttl_seconds: 600 });
    const declared = await http(`${services.issuer}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}`, 'idempotency-key': 'invoice-42' },
      body,
    });
    expect(declared.status).toBe(201);
    expect((await admin('DELETE', `/v1/orchestrators/${s.orchestrator.id}`)).status).toBe(204);
    // Its task runs on; a new registration under the id would read it, end it and, replaying the
    // key, get its task token: the id stays the old registration's.
    const key = await createClientKey();
    const again = await admin('POST', '/v1/orchestrators', { id: s.orchestrator.id, name: 'Reused', jwks: jwksOf(key), allowed_agents: [s.agent.id] });
    expect(again.status).toBe(409);
    expect(again.body.message).toMatch(/declared tasks/);
    expect((await admin('GET', `/v1/orchestrators/${s.orchestrator.id}`)).status).toBe(404);
    expect(await tasksOf(s.orchestrator.id)).toEqual([{ id: declared.body.task_id, status: 'active' }]);
    // An id that declared nothing is free again once deleted.
    const idle = await seedOrchestrator(pool, 'reused-idle', [s.agent.id]);
    expect((await admin('DELETE', `/v1/orchestrators/${idle.id}`)).status).toBe(204);
    expect((await admin('POST', '/v1/orchestrators', { id: idle.id, name: 'Idle', jwks: jwksOf(key), allowed_agents: [] })).status).toBe(201);
  });

  /** The answer a fresh request gets for a user its identity provider no longer vouches for: `400` naming `field`. */
  function expectUserRefused(answer: TestResponse, field: 'user_token' | 'user', message: RegExp): void {
    expect(answer.status).toBe(400);
    expect(answer.body.fields).toEqual([expect.objectContaining({ field, message: expect.stringMatching(message) })]);
    expect(answer.text).not.toMatch(/eyJ/);
  }

  const providerPath = (issuer: string) => `/v1/identity-providers/${encodeURIComponent(issuer)}`;

  it("refuses a create held past the removal of its user's identity provider", async () => {
    const s = await scene('remove-idp');
    const answer = await heldCreate(s, () => admin('DELETE', providerPath(`${providers.url}/remove-idp`)));
    expectUserRefused(answer, 'user_token', /not from a trusted identity provider/);
    await expectNothingCreated(s, answer);
  });

  /** A scene whose orchestrator may also assert users of its provider without a token, the provider's keys not held. */
  async function assertingScene(name: string) {
    const s = await scene(name);
    const issuer = `${providers.url}/${name}`;
    await pool.query('DELETE FROM identity_providers WHERE issuer = $1', [issuer]);
    await insertIdentityProviderRow(pool, rowIntegrityOf(pool), {
      issuer,
      jwksUri: `${issuer}/jwks`,
      audience: AUDIENCE,
      assertingOrchestrators: [s.orchestrator.id],
    });
    providers.hold(name).open();
    const asserted = (instance: string) =>
      sendJson(
        'POST',
        `${instance}/v1/tasks`,
        { agent_id: s.agent.id, purpose: 'pay invoice INV-42', allowed: PAYOUT_ALLOWED, ttl_seconds: 600, user: { iss: issuer, sub: `${name}-user` } },
        s.token,
      );
    const instances = [services.issuer, second.authUrl];
    // Each instance reads the provider and its keys, and trusts both proofs.
    for (const instance of instances) {
      expect((await create(s, true, instance)).status).toBe(201);
      expect((await asserted(instance)).status).toBe(201);
    }
    return { s, issuer, asserted, instances };
  }

  it('refuses the users of a removed identity provider at once, on the instances that just trusted it', async () => {
    const { s, issuer, asserted, instances } = await assertingScene('removed-idp');
    expect((await admin('DELETE', providerPath(issuer))).status).toBe(204);
    // Its users' tokens are refused for new tasks from then on, and so are assertions of its users.
    for (const instance of instances) {
      expectUserRefused(await create(s, true, instance), 'user_token', /not from a trusted identity provider/);
      expectUserRefused(await asserted(instance), 'user', /not trusted to assert users/);
    }
    expect(await tasksOf(s.orchestrator.id)).toHaveLength(4);
  });

  it('refuses the users of an identity provider registered again for another audience, at once', async () => {
    const { s, issuer, asserted, instances } = await assertingScene('reregistered-idp');
    expect((await admin('DELETE', providerPath(issuer))).status).toBe(204);
    // The same issuer and keys, for another audience and trusting no orchestrator to assert its users.
    expect((await admin('POST', '/v1/identity-providers', { issuer, jwks_uri: `${issuer}/jwks`, audience: 'another-app' })).status).toBe(201);
    for (const instance of instances) {
      expectUserRefused(await create(s, true, instance), 'user_token', /registered again|aud/);
      expectUserRefused(await asserted(instance), 'user', /not trusted to assert users/);
    }
    expect(await tasksOf(s.orchestrator.id)).toHaveLength(4);
  });

  /**
   * Many creates and one admin change, fired together, on two authorization server instances
   * over one database. Six creates wait for their user's identity provider, which answers once
   * the change has returned; the change is sent once the first of them is held (past its checks,
   * before its commit). Four lanes (two per instance) send creates one after another from
   * before the change until after it.
   * Every audited write takes the audit chain head in turn, so an event's `seq` orders commits:
   * no `task.created` of the orchestrator may come after the change's event, every task answered
   * `201` exists with its event (and no other task does), and every other answer is the refusal
   * a fresh request would get.
   */
  it.each([
    {
      name: 'par-suspend',
      change: (s: Scene) => admin('PATCH', `/v1/orchestrators/${s.orchestrator.id}`, { status: 'suspended' }),
      event: `type = 'admin.orchestrator.suspended' AND data->>'id' = $1`,
      key: (s: Scene) => s.orchestrator.id,
      refused: (answer: TestResponse) => expectInvalidToken(answer),
    },
    {
      name: 'par-narrow',
      change: (s: Scene) => admin('PATCH', `/v1/orchestrators/${s.orchestrator.id}`, { allowed_agents: [`${s.name}-other`] }),
      event: `type = 'admin.orchestrator.updated' AND data->>'id' = $1`,
      key: (s: Scene) => s.orchestrator.id,
      refused: (answer: TestResponse) => expectAgentRefused(answer, /may not create tasks for that agent/),
    },
    {
      name: 'par-agent',
      change: (s: Scene) => admin('PATCH', `/v1/agents/${s.agent.id}`, { status: 'suspended' }),
      event: `type = 'admin.agent.suspended' AND agent_id = $1`,
      key: (s: Scene) => s.agent.id,
      refused: (answer: TestResponse) => expectAgentRefused(answer, /suspended/),
    },
  ])('leaves no task created after a concurrent admin change committed ($name)', async ({ name, change, event, key, refused }) => {
    const s = await scene(name);
    const hold = providers.hold(name);
    let changeAnswered = false;
    const held = Array.from({ length: 6 }, () => create(s, true));
    // Each lane goes on until three of its creates were sent after the change answered.
    const lane = async (instance: string): Promise<TestResponse[]> => {
      const answers: TestResponse[] = [];
      for (let after = 0; after < 3 && answers.length < 200;) {
        answers.push(await create(s, false, instance));
        if (changeAnswered) after += 1;
      }
      return answers;
    };
    const lanes = [services.issuer, second.authUrl, services.issuer, second.authUrl].map(lane);
    const changed = Promise.race([
      hold.asked,
      Promise.all(held).then(() => {
        throw new Error('every held create answered before one was held');
      }),
    ])
      .then(() => change(s))
      .finally(() => {
        changeAnswered = true;
        hold.open();
      });
    const [changeAnswer, heldAnswers, laneAnswers] = await Promise.all([changed, Promise.all(held), Promise.all(lanes)]);
    expect(changeAnswer.status).toBe(200);
    // Held until after the change: refused, every one (at their commit, or at their checks).
    heldAnswers.forEach(refused);
    const answers = [...heldAnswers, ...laneAnswers.flat()];

    const { rows } = await pool.query<{ seq: string }>(`SELECT seq FROM audit_events WHERE ${event}`, [key(s)]);
    expect(rows).toHaveLength(1);
    const changeSeq = Number(rows[0].seq);
    const events = await createdEvents(s.orchestrator.id);
    expect(events.filter((created) => created.seq > changeSeq)).toEqual([]);

    const createdIds = answers.filter((answer) => answer.status === 201).map((answer) => answer.body.task_id as string);
    for (const answer of answers.filter((candidate) => candidate.status !== 201)) {
      refused(answer);
      expect(answer.text).not.toMatch(/eyJ/);
    }
    const tasks = await tasksOf(s.orchestrator.id);
    expect(tasks.map((task) => task.id).sort()).toEqual([...createdIds].sort());
    expect(events.map((created) => created.task_id).sort()).toEqual([...createdIds].sort());
  });

  it('declares one task for one Idempotency-Key when its copies arrive at both instances at once', async () => {
    const s = await scene('keyed');
    const key = `two-instances-${Date.now()}`;
    const body = JSON.stringify({ agent_id: s.agent.id, purpose: 'pay invoice INV-42', allowed: PAYOUT_ALLOWED, ttl_seconds: 600 });
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, n) =>
        http(`${n % 2 === 0 ? services.issuer : second.authUrl}/v1/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}`, 'idempotency-key': key },
          body,
        }),
      ),
    );
    for (const answer of answers) expect(answer.status).toBe(201);
    expect(new Set(answers.map((answer) => answer.body.task_id)).size).toBe(1);
    expect((await tasksOf(s.orchestrator.id)).map((task) => task.id)).toEqual([answers[0].body.task_id]);
    expect(await createdEvents(s.orchestrator.id)).toHaveLength(1);
  });
});
