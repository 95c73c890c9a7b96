import { createAdminApp } from '../apps/admin/src/admin.app';
import { sendJson, TestResponse } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

/**
 * Revoking an admin token revokes its tree: every token descended from it through `created_by`,
 * in the same transaction, as Vault revokes a token's children. Two admin instances over one
 * database, each with its own bootstrap token (two roots), so that a root's whole tree can be
 * revoked from outside it.
 */
describe('admin tokens: revoking a token revokes the tokens descended from it', () => {
  let first: TestServices;
  let second: TestServices;

  interface Created {
    id: string;
    token: string;
  }

  const api = <T = any>(on: TestServices, method: string, path: string, body: unknown, token: string): Promise<TestResponse<T>> =>
    sendJson<T>(method, `${on.adminUrl}${path}`, body, token);
  /** A token created with `creator` on `on` (the first instance unless said). */
  const create = async (creator: string, name: string, on: TestServices = first): Promise<Created> => {
    const created = await api(on, 'POST', '/v1/admin-tokens', { name, role: 'admin' }, creator);
    expect([name, created.status]).toEqual([name, 201]);
    return { id: created.body.id, token: created.body.token };
  };
  const revoke = (id: string, by: string, on: TestServices = first) => api(on, 'DELETE', `/v1/admin-tokens/${id}`, undefined, by);
  /** What a token gets on a read, on both instances: 200 while it works, 401 once revoked. */
  const statusOf = async (token: string): Promise<number[]> =>
    Promise.all([first, second].map(async (on) => (await api(on, 'GET', '/v1/admin-tokens/self', undefined, token)).status));
  const revokedEvents = async (id: string) =>
    (
      await first.runtime.pool.query<{ actor_id: string; data: Record<string, unknown> }>(
        `SELECT actor_id, data FROM audit_events WHERE type = 'admin.admin_token.revoked' AND data->>'id' = $1 ORDER BY seq`,
        [id],
      )
    ).rows;
  /** The tokens descended from `id` that still work (neither revoked nor expired). */
  const liveDescendants = async (id: string): Promise<string[]> =>
    (
      await first.runtime.pool.query<{ id: string }>(
        `WITH RECURSIVE tree (id) AS (
           SELECT $1::uuid UNION SELECT child.id FROM admin_tokens child JOIN tree ON child.created_by = tree.id::text
         )
         SELECT token.id FROM admin_tokens token JOIN tree USING (id)
          WHERE token.id <> $1 AND token.revoked_at IS NULL AND (token.expires_at IS NULL OR token.expires_at > now())`,
        [id],
      )
    ).rows.map((row) => row.id);

  beforeAll(async () => {
    first = await startTestServices({ admin: createAdminApp });
    // The same database, another WRIT_ADMIN_TOKEN: a second bootstrap token, root of its own tree.
    second = await startTestServices({ admin: createAdminApp, db: first.db });
  });
  afterAll(async () => {
    await second?.close();
    await first?.close();
  });

  it('revokes a child and a grandchild with their parent, at once on every instance, naming them in the event', async () => {
    const parent = await create(first.adminToken, 'parent');
    const child = await create(parent.token, 'child');
    const grandchild = await create(child.token, 'grandchild', second);
    expect(await statusOf(grandchild.token)).toEqual([200, 200]);

    expect((await revoke(parent.id, first.adminToken)).status).toBe(204);
    for (const token of [parent, child, grandchild]) expect(await statusOf(token.token)).toEqual([401, 401]);
    // Neither can mint a way back in.
    expect((await api(second, 'POST', '/v1/admin-tokens', { name: 'way-back', role: 'admin' }, child.token)).status).toBe(401);
    const bootstrap = (await api(first, 'GET', '/v1/admin-tokens/self', undefined, first.adminToken)).body.id;
    expect(await revokedEvents(parent.id)).toEqual([
      { actor_id: bootstrap, data: { id: parent.id, descendants: [child.id, grandchild.id], descendant_count: 2 } },
    ]);
    const listed = (await api(first, 'GET', '/v1/admin-tokens?limit=200', undefined, first.adminToken)).body.items as Array<{ id: string; revoked_at: string }>;
    for (const token of [parent, child, grandchild]) expect(listed.find((item) => item.id === token.id)?.revoked_at).toEqual(expect.any(String));
    // Again: nothing left to revoke, nothing recorded.
    expect((await revoke(parent.id, first.adminToken)).status).toBe(204);
    expect(await revokedEvents(parent.id)).toHaveLength(1);
  });

  it('revokes a child with its own descendants only: its parent, its sibling and another tree keep working', async () => {
    const parent = await create(first.adminToken, 'keeper');
    const [revokedChild, sibling] = [await create(parent.token, 'revoked-child'), await create(parent.token, 'sibling')];
    const [revokedGrandchild, siblingChild] = [await create(revokedChild.token, 'revoked-grandchild'), await create(sibling.token, 'sibling-child')];
    const other = await create(first.adminToken, 'other-root');
    const otherChild = await create(other.token, 'other-child');

    expect((await revoke(revokedChild.id, parent.token)).status).toBe(204);
    for (const token of [revokedChild, revokedGrandchild]) expect(await statusOf(token.token)).toEqual([401, 401]);
    for (const token of [parent, sibling, siblingChild, other, otherChild]) expect(await statusOf(token.token)).toEqual([200, 200]);
    expect(await revokedEvents(revokedChild.id)).toEqual([
      { actor_id: parent.id, data: { id: revokedChild.id, descendants: [revokedGrandchild.id], descendant_count: 1 } },
    ]);
    // The parent still creates and revokes.
    const later = await create(parent.token, 'later');
    expect((await revoke(later.id, parent.token)).status).toBe(204);
    expect(await revokedEvents(later.id)).toEqual([{ actor_id: parent.id, data: { id: later.id, descendants: [], descendant_count: 0 } }]);
  });

  it('refuses a token revoking a token it descends from (it would revoke itself), and revokes nothing', async () => {
    const parent = await create(first.adminToken, 'ancestor');
    const child = await create(parent.token, 'descendant');
    const grandchild = await create(child.token, 'grand-descendant');
    for (const [by, target] of [
      [grandchild, parent],
      [grandchild, child],
      [child, parent],
    ]) {
      const refused = await revoke(target.id, by.token, second);
      expect(refused.status).toBe(409);
      expect(refused.body).toEqual({
        error: 'conflict',
        message:
          'revoking this admin token would also revoke the token making the request, which it created (directly or not): use an admin token outside its tree',
      });
    }
    for (const token of [parent, child, grandchild]) expect(await statusOf(token.token)).toEqual([200, 200]);
    expect(await revokedEvents(parent.id)).toEqual([]);
    // The bootstrap token's children cannot revoke it either: every token of its tree would go.
    const bootstrap = (await api(first, 'GET', '/v1/admin-tokens/self', undefined, first.adminToken)).body.id;
    expect((await revoke(bootstrap, parent.token)).status).toBe(409);
    expect(await statusOf(first.adminToken)).toEqual([200, 200]);
  });

  it('leaves no live descendant of a parent revoked while it and its child create tokens on two instances', async () => {
    for (let round = 0; round < 5; round += 1) {
      const parent = await create(first.adminToken, `race-parent-${round}`);
      const child = await create(parent.token, `race-child-${round}`);
      const creations = Array.from({ length: 10 }, (_, n) =>
        api(n % 2 ? second : first, 'POST', '/v1/admin-tokens', { name: `race-${round}-${n}`, role: 'admin' }, n < 5 ? parent.token : child.token),
      );
      // The revocation sent amid the creations, so that some reach the database before it and some after.
      const answers = await Promise.all([...creations.slice(0, 5), revoke(parent.id, second.adminToken, second), ...creations.slice(5)]);
      const revoked = answers[5];
      const created = [...answers.slice(0, 5), ...answers.slice(6)];
      expect(revoked.status).toBe(204);
      // Each creation either committed before the revocation (and was revoked with the tree) or was refused.
      for (const answer of created) expect([201, 401]).toContain(answer.status);
      expect(await liveDescendants(parent.id)).toEqual([]);
      const made = created.filter((answer) => answer.status === 201).map((answer) => answer.body as Created);
      for (const token of [parent, child, ...made]) expect(await statusOf(token.token)).toEqual([401, 401]);
      // The event names exactly the tokens that existed: the child and every creation that committed.
      const [event] = await revokedEvents(parent.id);
      expect((event.data.descendants as string[]).slice().sort()).toEqual([child.id, ...made.map((token) => token.id)].sort());
      expect(event.data.descendant_count).toBe(1 + made.length);
    }
  });

  it('revokes the live descendants of a token revoked before the cascade existed, when it is revoked again', async () => {
    const parent = await create(first.adminToken, 'legacy-parent');
    const child = await create(parent.token, 'legacy-child');
    const grandchild = await create(child.token, 'legacy-grandchild');
    // As an earlier release left it: the parent revoked, its descendants not.
    await first.runtime.pool.query('UPDATE admin_tokens SET revoked_at = now() WHERE id = $1', [parent.id]);
    expect(await statusOf(child.token)).toEqual([200, 200]);

    expect((await revoke(parent.id, first.adminToken)).status).toBe(204);
    for (const token of [child, grandchild]) expect(await statusOf(token.token)).toEqual([401, 401]);
    expect((await revokedEvents(parent.id)).map((event) => event.data)).toEqual([
      { id: parent.id, descendants: [child.id, grandchild.id], descendant_count: 2, already_revoked: true },
    ]);
  });

  it('walks a tree whose rows were deleted or looped by hand, and splits a large one into events of at most 500', async () => {
    const parent = await create(first.adminToken, 'large-parent');
    const child = await create(parent.token, 'large-child');
    const pool = first.runtime.pool;
    const bulk = (creator: string, count: number, name: string) =>
      pool.query(
        `INSERT INTO admin_tokens (id, name, role, token_hash, created_by, created_at)
         SELECT gen_random_uuid(), $3, 'viewer', md5(random()::text || g), $1, now() + g * interval '1 microsecond' FROM generate_series(1, $2::int) g`,
        [creator, count, name],
      );
    await bulk(parent.id, 300, 'bulk-child');
    await bulk(child.id, 320, 'bulk-grandchild');
    // A creator deleted by hand (its children left with a dangling created_by), and a loop.
    const gone = await create(child.token, 'deleted-creator');
    const orphan = await create(gone.token, 'orphan');
    await pool.query('DELETE FROM admin_tokens WHERE id = $1', [gone.id]);
    const looped = await create(child.token, 'looped');
    const loopBack = await create(looped.token, 'loop-back');
    await pool.query('UPDATE admin_tokens SET created_by = $2 WHERE id = $1', [looped.id, loopBack.id]);

    expect((await revoke(parent.id, first.adminToken)).status).toBe(204);
    // The loop was cut off from the tree by hand: it and the orphan stay as they were.
    expect(await statusOf(orphan.token)).toEqual([200, 200]);
    expect(await statusOf(loopBack.token)).toEqual([200, 200]);
    expect(await liveDescendants(parent.id)).toEqual([]);
    const events = await revokedEvents(parent.id);
    expect(events.map((event) => [event.data.part, event.data.parts, (event.data.descendants as string[]).length, event.data.descendant_count])).toEqual([
      [1, 2, 500, 621],
      [2, 2, 121, 621],
    ]);
    const listed = events.flatMap((event) => event.data.descendants as string[]);
    expect(new Set(listed).size).toBe(621);
    expect(listed[0]).toBe(child.id);

    // A loop reachable from the token revoked: the walk ends.
    expect((await revoke(looped.id, first.adminToken)).status).toBe(204);
    expect(await statusOf(loopBack.token)).toEqual([401, 401]);
    expect((await revokedEvents(looped.id)).map((event) => event.data)).toEqual([{ id: looped.id, descendants: [loopBack.id], descendant_count: 1 }]);
  });

  it("revokes a bootstrap token's whole tree from another root, and leaves that root's tree alone", async () => {
    const firstRoot = (await api(first, 'GET', '/v1/admin-tokens/self', undefined, first.adminToken)).body.id;
    const secondRoot = (await api(second, 'GET', '/v1/admin-tokens/self', undefined, second.adminToken)).body.id;
    const child = await create(first.adminToken, 'bootstrap-child');
    const grandchild = await create(child.token, 'bootstrap-grandchild');
    const secondChild = await create(second.adminToken, 'second-root-child', second);

    expect((await revoke(firstRoot, second.adminToken, second)).status).toBe(204);
    for (const token of [first.adminToken, child.token, grandchild.token]) expect(await statusOf(token)).toEqual([401, 401]);
    for (const token of [second.adminToken, secondChild.token]) expect(await statusOf(token)).toEqual([200, 200]);
    expect(await liveDescendants(firstRoot)).toEqual([]);
    const [event] = await revokedEvents(firstRoot);
    expect(event.actor_id).toBe(secondRoot);
    expect(event.data.descendants).toEqual(expect.arrayContaining([child.id, grandchild.id]));
    expect((await api(second, 'GET', '/v1/audit/verify', undefined, second.adminToken)).body.valid).toBe(true);
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(second.runtime.pool)).toEqual([]);
  });
});
