import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PolicyEngine } from '@writ/policy';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { eventually } from './support/eventually';
import { http, sendJson, TestResponse } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

/** B1: the committed bundle (the file's version). B2: another module (a fixture). */
const B1 = readFileSync(join(__dirname, '..', 'policies', 'dist', 'bundle.tar.gz'));
const B2 = readFileSync(join(__dirname, '..', 'libs', 'policy', 'test-fixtures', 'echo.wasm'));

/**
 * Changes of the active stored policy made at the same time by two admins, on two instances: a
 * data update is built on the policy active when it starts (it compiles the module in force
 * with the new data), so one committed after another admin's change must not undo it.
 */
describe('policy activations racing, across two admin instances', () => {
  let first: TestServices;
  let second: TestServices;
  let data: Record<string, unknown>;
  const versions: Record<'b1' | 'b2' | 'b1Data' | 'b2Data', string> = { b1: '', b2: '', b1Data: '', b2Data: '' };

  beforeAll(async () => {
    first = await startTestServices({ admin: createAdminApp });
    second = await startSecondInstance(first, { admin: createAdminApp });
    data = JSON.parse(JSON.stringify(first.policy.current().data)) as Record<string, unknown>;
    (data as { writ: { config: Record<string, unknown> } }).writ.config.quarantine_after = 7;
    const b1 = await PolicyEngine.load(B1);
    const b2 = await PolicyEngine.load(B2);
    versions.b1 = b1.version;
    versions.b2 = b2.version;
    versions.b1Data = (await b1.withData(data)).version;
    versions.b2Data = (await b2.withData(data)).version;
    expect(new Set(Object.values(versions)).size).toBe(4);
  });
  afterAll(async () => {
    await second.close();
    await first.close();
  });
  afterEach(() => jest.restoreAllMocks());

  const upload = (on: TestServices, body: Buffer) =>
    http(`${on.adminUrl}/v1/policies/active`, {
      method: 'PUT',
      headers: { 'content-type': 'application/gzip', authorization: `Bearer ${on.adminToken}` },
      body,
    });
  const putData = (on: TestServices) => sendJson('PUT', `${on.adminUrl}/v1/policies/data`, { data }, on.adminToken);
  const deactivate = (on: TestServices) => sendJson('DELETE', `${on.adminUrl}/v1/policies/active`, undefined, on.adminToken);
  const activeVersion = async (): Promise<string | null> =>
    (await first.runtime.pool.query<{ version: string }>(`SELECT version FROM policies WHERE active`)).rows[0]?.version ?? null;
  const lastSeq = async (): Promise<number> => {
    await Promise.all([first.runtime.audit.drain(), second.runtime.audit.drain()]);
    return Number((await first.runtime.pool.query<{ seq: string }>(`SELECT coalesce(max(seq), 0) AS seq FROM audit_events`)).rows[0].seq);
  };
  /** The policy events committed after `seq`, in commit order (the audit chain's). */
  const policyEventsAfter = async (seq: number) => {
    await Promise.all([first.runtime.audit.drain(), second.runtime.audit.drain()]);
    const { rows } = await first.runtime.pool.query<{ type: string; version: string | null; previous_version: string }>(
      `SELECT type, data->>'version' AS version, data->>'previous_version' AS previous_version
         FROM audit_events WHERE type LIKE 'admin.policy.%' AND seq > $1 ORDER BY seq`,
      [seq],
    );
    return rows;
  };
  const expectStatus = (response: TestResponse, status: number) => expect({ status: response.status, body: response.body }).toMatchObject({ status });

  /**
   * Holds the next data update after it has read the active policy, where it compiles the module
   * with the new data (`PolicyEngine.withData`), until `release`.
   */
  function holdNextCompileWithData(): { reached: Promise<void>; release: () => void } {
    const withData = Object.getOwnPropertyDescriptor(PolicyEngine.prototype, 'withData')!.value as PolicyEngine['withData'];
    let reach: () => void = () => undefined;
    let release: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => (reach = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    let armed = true;
    jest.spyOn(PolicyEngine.prototype, 'withData').mockImplementation(async function (this: PolicyEngine, next: Record<string, unknown>) {
      if (armed) {
        armed = false;
        reach();
        await released;
      }
      return withData.call(this, next);
    });
    return { reached, release };
  }

  /**
   * Starts a data update on the first instance over `before`, holds it after its read, lets the
   * second instance's admin make `meanwhile`, releases it: it must be refused and change nothing.
   */
  async function dataUpdateOvertaken(before: () => Promise<void>, meanwhile: () => Promise<TestResponse>, after: string | null): Promise<void> {
    await before();
    const mark = await lastSeq();
    const hold = holdNextCompileWithData();
    const update = putData(first);
    await hold.reached;
    const other = await meanwhile();
    expect(other.status).toBeLessThan(300);
    hold.release();
    const refused = await update;
    expectStatus(refused, 409);
    expect(refused.body).toMatchObject({ error: 'conflict', message: expect.stringContaining('send it again') });
    expect(await activeVersion()).toBe(after);
    // Nothing recorded for the refused update: the other admin's change is the last one.
    const events = await policyEventsAfter(mark);
    expect(events.map((event) => event.type)).toEqual([after === null ? 'admin.policy.deactivated' : 'admin.policy.activated']);
    const expected = after ?? versions.b1;
    for (const instance of [first, second]) {
      expect(
        await eventually(
          () => instance.policy.current().version,
          (version) => version === expected,
        ),
      ).toBe(expected);
    }
  }

  it('refuses (409) a data update built on a bundle another admin replaced meanwhile, which stays active', async () => {
    await dataUpdateOvertaken(
      async () => expectStatus(await upload(first, B1), 200),
      () => upload(second, B2),
      versions.b2,
    );
  });

  it('refuses (409) a data update built on a stored policy another admin deactivated meanwhile', async () => {
    await dataUpdateOvertaken(
      async () => expectStatus(await upload(first, B1), 200),
      () => deactivate(second),
      null,
    );
  });

  it('refuses (409) a data update built on the policy file when another admin activated a bundle meanwhile', async () => {
    await dataUpdateOvertaken(
      async () => {
        await deactivate(first);
        expect(await activeVersion()).toBeNull();
      },
      () => upload(second, B2),
      versions.b2,
    );
  });

  it('in parallel, the policy left active is the last change committed, never an older bundle brought back', async () => {
    // Which instance makes which change: one each way, or both on one instance (whose audited
    // transactions may then share one batch).
    const placements = [
      [first, second],
      [second, first],
      [first, first],
    ];
    const rounds: Array<{ updated: TestResponse; events: Awaited<ReturnType<typeof policyEventsAfter>>; left: string | null }> = [];
    for (let round = 0; round < 9; round += 1) {
      expectStatus(await upload(first, B1), 200);
      const mark = await lastSeq();
      const [a, b] = placements[round % placements.length];
      const [updated, activated] = await Promise.all([putData(a), upload(b, B2)]);
      expectStatus(activated, 200);
      expect([200, 409]).toContain(updated.status);
      rounds.push({ updated, events: await policyEventsAfter(mark), left: await activeVersion() });
    }
    for (const { updated, events, left } of rounds) {
      expect(events).toHaveLength(updated.status === 200 ? 2 : 1);
      // In commit order, a data update committed is the new data over the module active then.
      let active = versions.b1;
      for (const event of events) {
        if (event.type === 'admin.policy.data_updated') expect(event.version).toBe(active === versions.b1 ? versions.b1Data : versions.b2Data);
        active = event.version!;
      }
      // What is left active is the last change committed: B2, or the new data over it; never
      // B1 brought back over B2.
      expect(left).toBe(active);
      expect([versions.b2, versions.b2Data]).toContain(left);
      if (updated.status === 200) expect(updated.body.version).toBe(events.find((event) => event.type === 'admin.policy.data_updated')!.version);
    }
    // And the audit trail chains: each event names as previous the version the one before it activated.
    for (const { events } of rounds) {
      expect(events.map((event) => event.previous_version)).toEqual([versions.b1, ...events.slice(0, -1).map((event) => event.version)]);
    }
  });
});
