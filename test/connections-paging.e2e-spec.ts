import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type CryptoKey, SignJWT } from 'jose';
import type { Pool } from 'pg';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { http, type TestResponse } from './support/oauth-client';
import { seedConnector } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { insertIdentityProviderRow, rowIntegrityOf } from '@writ/testing';

const IDP = 'https://idp-paging.example';
const OTHER_IDP = 'https://idp-other.example';
const cursorOf = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');

/**
 * Connection lists answer every row: `GET /v1/connections` (admin API) and `GET /v1/me/connections`
 * (the user's own, on the authorization server) page with `?limit=&cursor=` as the admin API's
 * other lists do, newest first (`connected_at` descending, then `id`). Walking the pages reads
 * each row exactly once (more rows than the old silent cap of 500, ties on `connected_at`, rows
 * within one millisecond), connections made meanwhile shift no older row, filters hold on every
 * page, and a forged, tampered or malformed cursor neither widens the filter nor reaches
 * PostgreSQL (a 400 naming `cursor`).
 */
describe('connection lists: keyset pages', () => {
  let services: TestServices;
  let pool: Pool;
  let jwksServer: Server;
  let userKey: CryptoKey;

  const admin = (query: string): Promise<TestResponse> =>
    http(`${services.adminUrl}/v1/connections${query}`, { headers: { authorization: `Bearer ${services.adminToken}` } });
  const mine = async (subject: string, query = '', issuer = IDP): Promise<TestResponse> =>
    http(`${services.issuer}/v1/me/connections${query}`, { headers: { authorization: `Bearer ${await userToken(subject, issuer)}` } });
  const userToken = (subject: string, issuer = IDP) =>
    new SignJWT({ sub: subject }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(issuer).setAudience('writ').setExpirationTime('5m').sign(userKey);

  /** Inserts a connection as the callback stores one (listing never opens the sealed tokens). */
  async function connection(connectorId: string, subject: string, connectedAt?: string, issuer = IDP): Promise<string> {
    const id = randomUUID();
    await pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, connected_at)
       VALUES ($1, $2, $3, $4, 'active', '{read}', '\\x00', COALESCE($5::timestamptz, now()))`,
      [id, connectorId, issuer, subject, connectedAt ?? null],
    );
    return id;
  }

  /** Every page of a list from `first`, following `next_cursor` (`fetch` gets a page by its query suffix). */
  async function walk(fetch: (cursor: string | null) => Promise<TestResponse>, between?: () => Promise<void>): Promise<any[]> {
    const items: any[] = [];
    let cursor: string | null = null;
    for (let pages = 0; ; pages++) {
      expect(pages).toBeLessThan(1000);
      const page = await fetch(cursor);
      expect(page.status).toBe(200);
      items.push(...page.body.items);
      cursor = page.body.next_cursor;
      if (cursor === null) return items;
      expect(typeof cursor).toBe('string');
      if (between) await between();
    }
  }
  const q = (params: string, cursor: string | null) => `?${params}${cursor ? `&cursor=${cursor}` : ''}`;

  /** The rows of the database in the documented order, as `[id]`. */
  async function expectedIds(where = 'true', values: unknown[] = []): Promise<string[]> {
    const { rows } = await pool.query<{ id: string }>(`SELECT id FROM connected_accounts WHERE ${where} ORDER BY connected_at DESC, id`, values);
    return rows.map((row) => row.id);
  }

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    pool = services.runtime.pool;
    const keys = await generateKeyPair('ES256', { extractable: true });
    userKey = keys.privateKey;
    const keySet = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
    jwksServer = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(keySet);
    });
    jwksServer.listen(0, '127.0.0.1');
    await once(jwksServer, 'listening');
    const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
    for (const issuer of [IDP, OTHER_IDP]) await insertIdentityProviderRow(pool, rowIntegrityOf(pool), { issuer, jwksUri });
    for (const id of ['pg-a', 'pg-b', 'pg-c', 'pg-d', 'pg-e', 'pg-f', 'pg-g']) await seedConnector(pool, id);
    // 520 connections on pg-a (more than the old silent cap of 500), many on one instant (ties
    // broken by id), and seven of alice's, on every connector.
    const tied = '2026-01-01T00:00:00.000000Z';
    await pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, connected_at)
       SELECT gen_random_uuid(), 'pg-a', $1, 'user-' || n, 'active', '{}', '\\x00',
              CASE WHEN n % 3 = 0 THEN $2::timestamptz ELSE $2::timestamptz - n * interval '1 second' END
         FROM generate_series(1, 520) AS n`,
      [IDP, tied],
    );
    for (const [index, connector] of ['pg-a', 'pg-b', 'pg-c', 'pg-d', 'pg-e', 'pg-f', 'pg-g'].entries())
      await connection(connector, 'alice', `2026-02-0${index + 1}T00:00:00Z`);
    // bob: the same subject at another issuer is another user.
    await connection('pg-b', 'bob');
    await connection('pg-b', 'alice', undefined, OTHER_IDP);
  });
  afterAll(async () => {
    await new Promise((resolve) => jwksServer.close(resolve));
    await services.close();
  });

  it('walks every connection exactly once, past 500, in the documented order (admin API)', async () => {
    const first = await admin('');
    expect(first.status).toBe(200);
    expect(first.body.items).toHaveLength(50);
    expect(typeof first.body.next_cursor).toBe('string');
    const all = await walk((cursor) => admin(q('limit=200', cursor)));
    const ids = all.map((item) => item.id);
    expect(ids.length).toBeGreaterThan(500);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(await expectedIds());
    for (const item of all) expect(Object.keys(item).sort()).toEqual(Object.keys(first.body.items[0]).sort());
    expect(JSON.stringify(all)).not.toMatch(/tokens_sealed|access_token|refresh_token/);
  });

  it('keeps the connector and user filters on every page', async () => {
    const byConnector = await walk((cursor) => admin(q('connector_id=pg-a&limit=7', cursor)));
    expect(byConnector.map((item) => item.id)).toEqual(await expectedIds(`connector_id = 'pg-a'`));
    expect(byConnector.every((item) => item.connector_id === 'pg-a')).toBe(true);
    const alice = await walk((cursor) => admin(q(`user_iss=${encodeURIComponent(IDP)}&user_sub=alice&limit=2`, cursor)));
    expect(alice.map((item) => item.id)).toEqual(await expectedIds(`user_issuer = $1 AND user_subject = 'alice'`, [IDP]));
    expect(alice).toHaveLength(7);
    expect(alice.map((item) => item.connected_at)).toEqual([7, 6, 5, 4, 3, 2, 1].map((day) => `2026-02-0${day}T00:00:00.000Z`));
    const both = await walk((cursor) => admin(q(`user_iss=${encodeURIComponent(IDP)}&user_sub=alice&connector_id=pg-b&limit=1`, cursor)));
    expect(both.map((item) => [item.connector_id, item.user])).toEqual([['pg-b', { iss: IDP, sub: 'alice' }]]);
  });

  it('reads rows connected within one millisecond apart (the cursor keeps microseconds)', async () => {
    await seedConnector(pool, 'pg-micro');
    const made: string[] = [];
    for (const fraction of ['123400', '123300', '123200', '123000', '122999'])
      made.push(await connection('pg-micro', `m-${fraction}`, `2026-03-01T00:00:00.${fraction}Z`));
    const walked = await walk((cursor) => admin(q('connector_id=pg-micro&limit=1', cursor)));
    expect(walked.map((item) => item.id)).toEqual(made);
    const page = await admin('?connector_id=pg-micro&limit=1');
    expect(JSON.parse(Buffer.from(page.body.next_cursor, 'base64url').toString('utf8'))).toEqual({ c: '2026-03-01T00:00:00.123400Z', i: made[0] });
  });

  it('neither repeats nor skips an older row while connections are made between pages', async () => {
    await seedConnector(pool, 'pg-live');
    for (let n = 0; n < 12; n++) await connection('pg-live', `live-${n}`, `2026-04-01T00:00:${String(n).padStart(2, '0')}Z`);
    const before = await expectedIds(`connector_id = 'pg-live'`);
    let made = 0;
    const walked = await walk(
      (cursor) => admin(q('connector_id=pg-live&limit=3', cursor)),
      async () => {
        // New connections (now(): newer than every seeded one) and one on an instant already passed.
        await Promise.all([connection('pg-live', `new-${made++}`), connection('pg-live', `new-${made++}`)]);
      },
    );
    const ids = walked.map((item) => item.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(before);
    expect(made).toBeGreaterThan(0);
    // The admin API's walk and the user's own walk agree under concurrent inserts too.
    const concurrent = await Promise.all([
      walk((cursor) => admin(q('connector_id=pg-live&limit=4', cursor))),
      Promise.all(Array.from({ length: 6 }, (_, n) => connection('pg-live', `burst-${n}`))),
    ]);
    const seen = concurrent[0].map((item) => item.id);
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of before) expect(seen.filter((one) => one === id)).toHaveLength(1);
  });

  it("pages the user's own connections, the user taken from the token on every page", async () => {
    const first = await mine('alice', '?limit=3');
    expect(first.status).toBe(200);
    expect(first.body.items).toHaveLength(3);
    expect(first.headers.get('cache-control')).toBe('no-store');
    const walked = await walk(async (cursor) => mine('alice', q('limit=3', cursor)));
    expect(walked.map((item) => item.id)).toEqual(await expectedIds(`user_issuer = $1 AND user_subject = 'alice'`, [IDP]));
    expect(walked.every((item) => item.user.iss === IDP && item.user.sub === 'alice')).toBe(true);
    // The same subject at another issuer is another user.
    const other = await mine('alice', '', OTHER_IDP);
    expect(other.body).toEqual({ items: [expect.objectContaining({ connector_id: 'pg-b', user: { iss: OTHER_IDP, sub: 'alice' } })], next_cursor: null });
    // Bob's cursor (or a cursor naming bob's row) given with alice's token still lists alice's rows only.
    const bobs = await expectedIds(`user_subject = 'user-3'`);
    const forged = cursorOf({ c: '2999-01-01T00:00:00Z', i: bobs[0], user_sub: 'user-3', u: { iss: IDP, sub: 'user-3' } });
    const page = await mine('alice', `?limit=200&cursor=${forged}`);
    expect(page.status).toBe(200);
    expect(page.body.items.map((item: any) => item.id)).toEqual(await expectedIds(`user_issuer = $1 AND user_subject = 'alice'`, [IDP]));
    const none = await mine('nobody', `?cursor=${first.body.next_cursor}`);
    expect(none.body).toEqual({ items: [], next_cursor: null });
  });

  it("refuses a query member the user's own routes do not read, naming it, rather than ignoring it", async () => {
    const refusal = (name: string) => ({ error: 'invalid_request', message: 'the query is invalid', fields: [{ field: name, message: 'unknown field' }] });
    // Object.prototype names used to be dropped unread, answering the whole first page.
    for (const name of ['__proto__', 'constructor', 'toString', 'valueOf', 'curser']) {
      const refused = await mine('alice', `?${name}=1`);
      expect({ name, status: refused.status, body: refused.body }).toEqual({ name, status: 400, body: refusal(name) });
    }
    expect((await mine('alice', '?limit=2')).status).toBe(200);
    // A disconnection with a query is refused, and the connection stays.
    const id = await connection('pg-c', 'query-user');
    const removal = await http(`${services.issuer}/v1/me/connections/${id}?revoke_upstream=false`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${await userToken('query-user')}` },
    });
    expect([removal.status, removal.body]).toEqual([400, refusal('revoke_upstream')]);
    const { rows } = await pool.query(`SELECT status FROM connected_accounts WHERE id = $1`, [id]);
    expect(rows).toEqual([{ status: 'active' }]);
  });

  it('keeps a forged cursor inside the filter of the request (admin API)', async () => {
    const outsider = (await expectedIds(`connector_id = 'pg-a'`))[0];
    // A position past every row, carrying "filters" of its own: only the request's filters apply.
    const forged = cursorOf({ c: '2999-01-01T00:00:00.000000Z', i: outsider, connector_id: 'pg-a', user_sub: 'user-3' });
    const page = await admin(`?user_iss=${encodeURIComponent(IDP)}&user_sub=alice&limit=200&cursor=${forged}`);
    expect(page.status).toBe(200);
    expect(page.body.items).toHaveLength(7);
    expect(page.body.items.every((item: any) => item.user.sub === 'alice')).toBe(true);
    // A cursor of one filter given to another moves within the other only.
    const fromAll = (await admin('?limit=1')).body.next_cursor;
    const scoped = await admin(`?connector_id=pg-c&cursor=${fromAll}`);
    expect(scoped.status).toBe(200);
    expect(scoped.body.items.every((item: any) => item.connector_id === 'pg-c')).toBe(true);
  });

  it('refuses a malformed or tampered cursor with a 400 naming cursor, on both lists', async () => {
    const valid = (await admin('?limit=1')).body.next_cursor as string;
    const decoded = JSON.parse(Buffer.from(valid, 'base64url').toString('utf8'));
    const bad = [
      'AAAA',
      'not base64!',
      '%00',
      'A'.repeat(1025),
      valid.slice(0, -3),
      `${valid}$`,
      cursorOf(null),
      cursorOf([decoded.c, decoded.i]),
      cursorOf({ c: decoded.c }),
      cursorOf({ i: decoded.i }),
      cursorOf({ ...decoded, i: 'not-a-uuid' }),
      cursorOf({ ...decoded, i: `${decoded.i}' OR '1'='1` }),
      cursorOf({ ...decoded, c: 12345 }),
      cursorOf({ ...decoded, c: '2026-02-30T00:00:00Z' }),
      cursorOf({ ...decoded, c: '0000-01-01T00:00:00Z' }),
      cursorOf({ ...decoded, c: '1969-12-31T23:59:59Z' }),
      cursorOf({ ...decoded, c: '2026-01-01T00:00:00.1234567Z' }),
      cursorOf({ ...decoded, c: '2026-01-01 00:00:00' }),
      cursorOf({ ...decoded, c: '2026-01-01T00:00:00+01:00' }),
      cursorOf({ ...decoded, c: 'infinity' }),
      cursorOf({ k: 'pg-a' }),
    ];
    for (const cursor of bad) {
      for (const response of [await admin(`?cursor=${encodeURIComponent(cursor)}`), await mine('alice', `?cursor=${encodeURIComponent(cursor)}`)]) {
        expect([cursor.slice(0, 40), response.status]).toEqual([cursor.slice(0, 40), 400]);
        expect([cursor.slice(0, 40), response.body.error, response.body.fields.map((f: { field: string }) => f.field)]).toEqual([
          cursor.slice(0, 40),
          'invalid_request',
          ['cursor'],
        ]);
      }
    }
  });

  it('bounds limit to 1..200 (default 50), a 400 naming limit otherwise, on both lists', async () => {
    for (const limit of ['0', '-1', '201', '1e2', '0x10', 'abc', '', '99999999999']) {
      for (const response of [await admin(`?limit=${limit}`), await mine('alice', `?limit=${limit}`)]) {
        expect([limit, response.status]).toEqual([limit, 400]);
        expect([limit, [...new Set(response.body.fields.map((f: { field: string }) => f.field))]]).toEqual([limit, ['limit']]);
      }
    }
    expect((await admin('?limit=1')).body.items).toHaveLength(1);
    expect((await admin('?limit=200')).body.items).toHaveLength(200);
    expect((await admin('')).body.items).toHaveLength(50);
    expect((await mine('alice', '?limit=1')).body.items).toHaveLength(1);
    expect((await mine('alice', '?limit=200')).body.items).toHaveLength(7);
    // Unknown query members are refused, not ignored.
    expect((await admin('?offset=5')).status).toBe(400);
    expect((await mine('alice', '?offset=5')).status).toBe(400);
  });

  it('refuses a user filter given by half as a query problem, naming the missing member', async () => {
    for (const [query, field] of [
      [`?user_iss=${encodeURIComponent(IDP)}`, 'user_sub'],
      ['?user_sub=alice', 'user_iss'],
    ]) {
      const response = await admin(query);
      expect([query, response.status, response.body]).toEqual([
        query,
        400,
        { error: 'invalid_request', message: 'the query is invalid', fields: [{ field, message: 'user_iss and user_sub go together' }] },
      ]);
    }
  });
});
