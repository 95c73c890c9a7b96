import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { samplePolicyInput } from '@writ/policy';
import { spinningPolicyModule, tarGz } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, payoutUpTo, seedWorld, World } from './support/grant-flow';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { eventually } from './support/eventually';
import { startTestServices, TestServices } from './support/test-services';

const BUNDLE = readFileSync(join(__dirname, '..', 'policies', 'dist', 'bundle.tar.gz'));
const ECHO = readFileSync(join(__dirname, '..', 'libs', 'policy', 'test-fixtures', 'echo.wasm'));
const CUBIC = readFileSync(join(__dirname, '..', 'libs', 'policy', 'test-fixtures', 'cubic.wasm'));
const OTHER_ENTRYPOINT = readFileSync(join(__dirname, '..', 'libs', 'policy', 'test-fixtures', 'other-entrypoint.wasm'));

describe('policy distribution through PostgreSQL, with last-known-good', () => {
  let primary: TestServices;
  let second: TestServices;
  let world: World;
  let fileVersion: string;

  beforeAll(async () => {
    primary = await startTestServices({ admin: createAdminApp });
    // A second instance of the authorization server over the same database.
    second = await startTestServices({ db: primary.db });
    world = await seedWorld(primary.runtime.pool);
    fileVersion = primary.policy.current().version;
  });
  afterAll(async () => {
    await second.close();
    await primary.close();
  });

  const upload = (body: Buffer, type = 'application/gzip', token = primary.adminToken) =>
    http(`${primary.adminUrl}/v1/policies/active`, { method: 'PUT', headers: { 'content-type': type, authorization: `Bearer ${token}` }, body });
  const admin = (method: string, path: string, body?: unknown, token = primary.adminToken) => sendJson(method, `${primary.adminUrl}${path}`, body, token);

  it('refuses a bundle that does not load, or lacks the entrypoint, and keeps the policy in force', async () => {
    const garbage = await upload(Buffer.from('not a bundle'));
    expect(garbage.status).toBe(400);
    expect(garbage.body.fields[0].field).toBe('body');
    const wrong = await upload(OTHER_ENTRYPOINT, 'application/wasm');
    expect(wrong.status).toBe(400);
    expect(wrong.body.fields[0].message).toMatch(/entrypoint/);
    expect((await admin('GET', '/v1/policies')).body.version).toBe(fileVersion);
    expect(second.policy.current().version).toBe(fileVersion);
  });

  it('refuses, on a worker, a module that does not answer: in force and in a dry run, the instance answering meanwhile', async () => {
    const spinning = spinningPolicyModule(ECHO);
    const task = await createTask(primary, world.orchestrator);
    const [activated, dryRun, listed] = await Promise.all([
      upload(spinning, 'application/wasm'),
      admin('POST', '/v1/policies/evaluate', {
        task_id: task.task_id,
        authorization_details: payoutUpTo(42000),
        candidate_bundle: spinning.toString('base64'),
      }),
      // Asked while both probes spin: answered, so the event loop is free.
      new Promise((resolve) => setTimeout(resolve, 500)).then(() => admin('GET', '/v1/policies')),
    ]);
    expect(listed.status).toBe(200);
    for (const [refused, field, asked] of [
      [activated, 'body', 'a sample token exchange'],
      [dryRun, 'candidate_bundle', "the dry run's input"],
    ] as const) {
      expect(refused.status).toBe(400);
      expect(refused.body.fields).toEqual([{ field, message: expect.stringMatching(new RegExp(`did not answer ${asked} within \\d+ ms`)) }]);
    }
    expect((await admin('GET', '/v1/policies')).body.version).toBe(fileVersion);
    expect(second.policy.current().version).toBe(fileVersion);
  });

  it('refuses, on a worker, a dry run whose candidate does not answer the input an operator gives it, the instance answering meanwhile', async () => {
    // The candidate answers the probe's sample request at once, and this input in about 13 s of
    // the event loop (n cubed steps; OPA's WebAssembly cannot be interrupted): run here, every
    // request of the instance would wait, and a larger array would stop it for good.
    const operator = (await admin('POST', '/v1/admin-tokens', { name: 'dry-runner', role: 'operator' })).body.token;
    const started = Date.now();
    const [dryRun, listed] = await Promise.all([
      admin('POST', '/v1/policies/evaluate', { input: { spin: Array(560).fill('v') }, candidate_bundle: CUBIC.toString('base64') }, operator),
      new Promise((resolve) => setTimeout(resolve, 500)).then(() => admin('GET', '/v1/policies')),
    ]);
    expect(listed.status).toBe(200);
    expect(dryRun.status).toBe(400);
    expect(dryRun.body.fields).toEqual([{ field: 'candidate_bundle', message: expect.stringMatching(/did not answer .* within \d+ ms/) }]);
    expect(Date.now() - started).toBeLessThan(10_000);
    // The same candidate on a small input answers as usual.
    const small = await admin('POST', '/v1/policies/evaluate', { input: { spin: ['v'] }, candidate_bundle: CUBIC.toString('base64') }, operator);
    expect(small.status).toBe(200);
    expect(small.body.decision).toMatchObject({ allow: false, reasons: ['cubic fixture'] });
  });

  it("answers a dry run with the worker's decision, never evaluating its input again on the event loop", async () => {
    // An input that takes seconds, but less than the probe's 5 s: evaluated again here, it held
    // the event loop as long after the worker had answered it.
    const operator = (await admin('POST', '/v1/admin-tokens', { name: 'slow-dry-runner', role: 'operator' })).body.token;
    // The services run in this process: the longest the event loop went without turning.
    let stalled = 0;
    let last = Date.now();
    const ticking = setInterval(() => {
      stalled = Math.max(stalled, Date.now() - last);
      last = Date.now();
    }, 5);
    const started = Date.now();
    const dryRun = await admin(
      'POST',
      '/v1/policies/evaluate',
      { input: { spin: Array(250).fill('v') }, candidate_bundle: CUBIC.toString('base64') },
      operator,
    );
    const took = Date.now() - started;
    clearInterval(ticking);
    expect(dryRun.status).toBe(200);
    expect(dryRun.body.decision).toMatchObject({ allow: false, reasons: ['cubic fixture'] });
    expect(took).toBeGreaterThan(1_000);
    expect(stalled).toBeLessThan(500);
  });

  it('refuses, on a worker, a raw dry-run input the policy in force cannot answer in time, the instance answering meanwhile', async () => {
    // The shipped policy checks an `in` constraint value by value (quadratic): the token endpoint
    // bounds such arrays at 100 values, a raw dry-run input did not, and 30 000 of them took
    // about 14 s of the event loop; under 1 MiB, 60 000 took a minute.
    const operator = (await admin('POST', '/v1/admin-tokens', { name: 'raw-dry-runner', role: 'operator' })).body.token;
    const input = samplePolicyInput() as unknown as Record<string, any>;
    const values = Array.from({ length: 30_000 }, (_, i) => `v${i}`);
    input.connectors.payments.operations['payouts.create'].constraints.destination.op = 'in';
    input.request.authorization_details[0].constraints.destination = values;
    input.task.allowed[0].constraints.destination = [...values].reverse();
    const started = Date.now();
    const [dryRun, listed] = await Promise.all([
      admin('POST', '/v1/policies/evaluate', { input }, operator),
      new Promise((resolve) => setTimeout(resolve, 500)).then(() => admin('GET', '/v1/policies')),
    ]);
    expect(listed.status).toBe(200);
    expect(dryRun.status).toBe(400);
    expect(dryRun.body.fields).toEqual([{ field: 'input', message: expect.stringMatching(/did not answer the dry run's input within \d+ ms/) }]);
    expect(Date.now() - started).toBeLessThan(10_000);
    // A reasonable input still answers.
    const sample = await admin('POST', '/v1/policies/evaluate', { input: samplePolicyInput() }, operator);
    expect(sample.status).toBe(200);
    expect(sample.body.decision.allow).toBe(true);
  });

  it('refuses with 400, never a 500, a bundle whose data is nested too deeply to read', async () => {
    const depth = 20_000;
    const deep = tarGz([
      ['/policy.wasm', ECHO],
      ['/data.json', `{"writ":${'['.repeat(depth)}${']'.repeat(depth)}}`],
    ]);
    const uploaded = await upload(deep);
    expect(uploaded.status).toBe(400);
    expect(uploaded.body.fields[0]).toMatchObject({ field: 'body', message: expect.stringMatching(/policy data/) });
    const dryRun = await admin('POST', '/v1/policies/evaluate', { input: {}, candidate_bundle: deep.toString('base64') });
    expect(dryRun.status).toBe(400);
    expect(dryRun.body.fields[0].field).toBe('candidate_bundle');
    expect((await admin('GET', '/v1/policies')).body.version).toBe(fileVersion);
  });

  it('tries two dry-run candidates at once and answers 503 to more, instead of a worker each', async () => {
    // Every dry run is probed on a worker thread (an isolate, up to 256 MB of heap and 64 MiB of
    // WebAssembly memory): WRIT_MAX_IN_FLIGHT dry runs at once were as many workers.
    const operator = (await admin('POST', '/v1/admin-tokens', { name: 'many-dry-runs', role: 'operator' })).body.token;
    const spinning = spinningPolicyModule(ECHO).toString('base64');
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => admin('POST', '/v1/policies/evaluate', { input: {}, candidate_bundle: spinning }, operator)),
    );
    const statuses = answers.map((answer) => answer.status).sort();
    expect(statuses).toEqual([400, 400, 503, 503, 503]);
    for (const busy of answers.filter((answer) => answer.status === 503)) {
      expect(busy.headers.get('retry-after')).toBe('5');
      expect(busy.body).toMatchObject({ error: 'temporarily_unavailable' });
    }
  });

  it('refuses at once, the instance answering meanwhile, a bundle whose data is too large to ever load', async () => {
    // 60 MB of small objects gzip to a few hundred KB, within an operator's dry-run body: hashed
    // and parsed on the event loop before the policy's 64 MiB of memory refused it, twice (probe
    // and load), it stopped the process (every service, under npm start) for tens of seconds.
    const operator = (await admin('POST', '/v1/admin-tokens', { name: 'big-data', role: 'operator' })).body.token;
    const data = `{"writ":{"items":[${'{"k":1,"v":"ab"},'.repeat(3_500_000)}{}]}}`;
    const bundle = tarGz([
      ['/policy.wasm', ECHO],
      ['/data.json', data],
    ]);
    expect(bundle.length).toBeLessThan(700_000);
    const started = Date.now();
    const [dryRun, listed] = await Promise.all([
      admin('POST', '/v1/policies/evaluate', { input: {}, candidate_bundle: bundle.toString('base64') }, operator),
      new Promise((resolve) => setTimeout(resolve, 200)).then(async () => {
        const asked = Date.now();
        const response = await admin('GET', '/v1/policies');
        return { status: response.status, ms: Date.now() - asked };
      }),
    ]);
    expect(dryRun.status).toBe(400);
    expect(dryRun.body.fields).toEqual([{ field: 'candidate_bundle', message: expect.stringMatching(/data .*larger than 8 MiB/) }]);
    expect(listed.status).toBe(200);
    expect(listed.ms).toBeLessThan(1_500);
    expect(Date.now() - started).toBeLessThan(5_000);
    const uploaded = await upload(bundle);
    expect(uploaded.status).toBe(400);
    expect(uploaded.body.fields[0]).toMatchObject({ field: 'body', message: expect.stringMatching(/larger than 8 MiB/) });
    expect((await admin('GET', '/v1/policies')).body.version).toBe(fileVersion);
  });

  it('lets only an admin change the policy', async () => {
    const operator = await admin('POST', '/v1/admin-tokens', { name: 'ops', role: 'operator' });
    expect(operator.status).toBe(201);
    expect((await upload(BUNDLE, 'application/gzip', operator.body.token)).status).toBe(403);
    expect((await admin('PUT', '/v1/policies/data', { data: {} }, operator.body.token)).status).toBe(403);
  });

  it('swaps new policy data onto every instance without a restart, and back', async () => {
    const data = JSON.parse(JSON.stringify(primary.policy.current().data));
    data.writ.config.approval = { payments: { constraint: 'amount_max', above: 10000 } };
    const changed = await admin('PUT', '/v1/policies/data', { data });
    expect(changed.status).toBe(200);
    expect(changed.body.version).not.toBe(fileVersion);
    expect(changed.body).toMatchObject({ source: 'data update', loaded_by: 'admin:bootstrap' });
    expect((await admin('GET', '/v1/policies')).body).toMatchObject({ version: changed.body.version, source: 'database' });
    const version = await eventually(
      () => second.policy.current().version,
      (value) => value === changed.body.version,
    );
    expect(version).toBe(changed.body.version);

    const task = await createTask(second, world.orchestrator);
    const pending = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(42000)));
    expect(pending.body.error).toBe('authorization_pending');
    const { rows } = await primary.runtime.pool.query(
      `SELECT data->>'policy_version' AS version FROM audit_events WHERE task_id = $1 AND type = 'grant.decision'`,
      [task.task_id],
    );
    expect(rows[0].version).toBe(changed.body.version);

    expect((await admin('DELETE', '/v1/policies/active')).status).toBe(204);
    expect(
      await eventually(
        () => second.policy.current().version,
        (value) => value === fileVersion,
      ),
    ).toBe(fileVersion);
    expect((await admin('GET', '/v1/policies')).body.version).toBe(fileVersion);
  });

  it('dry-runs a real task against candidate data or a candidate bundle without activating or issuing anything', async () => {
    const task = await createTask(primary, world.orchestrator);
    const ask = { task_id: task.task_id, authorization_details: payoutUpTo(42000) };
    const active = await admin('POST', '/v1/policies/evaluate', ask);
    expect(active.status).toBe(200);
    expect(active.body).toMatchObject({ policy_version: fileVersion, decision: { allow: true, requires_approval: false } });
    const data = JSON.parse(JSON.stringify(primary.policy.current().data));
    data.writ.config.approval = { payments: { constraint: 'amount_max', above: 10000 } };
    const candidate = await admin('POST', '/v1/policies/evaluate', { ...ask, candidate_data: data });
    expect(candidate.body.decision).toMatchObject({ allow: false, requires_approval: true });
    expect(candidate.body.policy_version).not.toBe(fileVersion);
    const bundle = await admin('POST', '/v1/policies/evaluate', { ...ask, candidate_bundle: BUNDLE.toString('base64') });
    expect(bundle.body).toMatchObject({ policy_version: fileVersion, decision: { allow: true } });
    const broken = await admin('POST', '/v1/policies/evaluate', { ...ask, candidate_bundle: Buffer.from('nope').toString('base64') });
    expect(broken.status).toBe(400);
    expect(broken.body.fields[0].field).toBe('candidate_bundle');
    expect(primary.policy.current().version).toBe(fileVersion);
    const { rows } = await primary.runtime.pool.query(
      `SELECT (SELECT count(*) FROM access_tokens WHERE task_id = $1)::int AS tokens, (SELECT count(*) FROM approvals WHERE task_id = $1)::int AS approvals`,
      [task.task_id],
    );
    expect(rows[0]).toEqual({ tokens: 0, approvals: 0 });
  });

  it('activates an uploaded compiled bundle and records who did it', async () => {
    const uploaded = await upload(BUNDLE);
    expect(uploaded.status).toBe(200);
    expect(uploaded.body).toMatchObject({ version: fileVersion, source: 'upload' });
    await primary.runtime.audit.drain();
    const { rows } = await primary.runtime.pool.query(`SELECT type, actor_type FROM audit_events WHERE type LIKE 'admin.policy.%' ORDER BY seq`);
    expect(rows.map((row) => row.type)).toEqual(['admin.policy.data_updated', 'admin.policy.deactivated', 'admin.policy.activated']);
    expect(rows.every((row) => row.actor_type === 'admin')).toBe(true);
    expect((await admin('DELETE', '/v1/policies/active')).status).toBe(204);
  });

  it('refuses, as a policy refusal, an allow whose max_uses no credential can record', async () => {
    // A careless operator: read_max_uses is a positive integer, so the default policy passes it on.
    const data = JSON.parse(JSON.stringify(primary.policy.current().data));
    data.writ.config.read_max_uses = 3_000_000_000;
    const changed = await admin('PUT', '/v1/policies/data', { data });
    expect(changed.status).toBe(200);
    await eventually(
      () => second.policy.current().version,
      (value) => value === changed.body.version,
    );
    const task = await createTask(second, world.orchestrator);
    const read = await tokenRequest(
      second.issuer,
      world.agent,
      exchangeFields(task.task_token, [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }]),
    );
    expect(read.status).toBe(400);
    expect(read.body.error).toBe('invalid_authorization_details');
    expect(read.body.error_description).toMatch(/malformed policy decision: max_uses must be a positive integer up to 2147483647/);
    const { rows } = await primary.runtime.pool.query(`SELECT count(*)::int AS tokens FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    expect(rows[0].tokens).toBe(0);
    expect((await admin('DELETE', '/v1/policies/active')).status).toBe(204);
  });

  it('installs stored data holding a member named toJSON under the version it was activated as, and issues with it', async () => {
    const data = JSON.parse(JSON.stringify(primary.policy.current().data));
    // Members in another order than jsonb keeps them (shortest first).
    data.writ.config.notes = { toJSON: 'kept as data', zz: 1, a: 2 };
    const changed = await admin('PUT', '/v1/policies/data', { data });
    expect(changed.status).toBe(200);
    try {
      expect(
        await eventually(
          () => second.policy.current().version,
          (value) => value === changed.body.version,
        ),
      ).toBe(changed.body.version);
      const task = await createTask(second, world.orchestrator);
      const issued = await tokenRequest(second.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(4200)));
      expect(issued.status).toBe(200);
    } finally {
      expect((await admin('DELETE', '/v1/policies/active')).status).toBe(204);
      await eventually(
        () => second.policy.current().version,
        (value) => value === fileVersion,
      );
    }
  });
});
