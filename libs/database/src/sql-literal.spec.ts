import { Pool } from 'pg';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { executeStatement, NotALiteralError, prepareOnce, sqlArrayLiteral, sqlLiteral, wellFormed } from './sql-literal';

const HOSTILE = [
  `'); DROP TABLE x; --`,
  `back\\slash \\' E'x' \\\\`,
  `$$ $tag$ \u2028 \ud83d\ude00 "quoted" {braces,comma} NULL null`,
  `\\x00 \\u0000 \\n`,
  `lone \ud800 high and \udc00 low`,
  '',
];

describe('SQL literals', () => {
  let db: TestDatabase;
  let pool: Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 2 });
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('reads back every hostile string exactly as the same value sent as a parameter', async () => {
    for (const value of HOSTILE) {
      const { rows } = await pool.query<{ literal: string; parameter: string }>(`SELECT ${sqlLiteral(value)}::text AS literal, $1::text AS parameter`, [value]);
      expect(rows[0].literal).toBe(rows[0].parameter);
      expect(rows[0].literal).toBe(wellFormed(value));
    }
  });

  it('reads the same whatever standard_conforming_strings says', async () => {
    const client = await pool.connect();
    try {
      await client.query('SET standard_conforming_strings = off');
      const { rows } = await client.query<{ v: string }>(`SELECT ${sqlLiteral(HOSTILE[1])}::text AS v`);
      expect(rows[0].v).toBe(HOSTILE[1]);
    } finally {
      await client.query('RESET standard_conforming_strings');
      client.release();
    }
  });

  it('writes arrays of text, numbers and NULLs as parameters would', async () => {
    const values = [...HOSTILE, null, 42, -1.5, 1e21];
    const { rows } = await pool.query<{ literal: string[]; parameter: string[] }>(
      `SELECT ${sqlArrayLiteral(values)}::text[] AS literal, $1::text[] AS parameter`,
      [values.map((value) => (value === null ? null : String(value)))],
    );
    expect(rows[0].literal).toEqual(rows[0].parameter);
    expect(sqlArrayLiteral([])).toBe(`E'{}'`);
    const { rows: flags } = await pool.query<{ literal: boolean[] }>(`SELECT ${sqlArrayLiteral([true, false, null])}::bool[] AS literal`);
    expect(flags[0].literal).toEqual([true, false, null]);
  });

  it('refuses a NUL and a number that is not finite instead of sending something else', () => {
    expect(() => sqlLiteral('a\u0000b')).toThrow(NotALiteralError);
    expect(() => sqlArrayLiteral(['ok', 'a\u0000b'])).toThrow(NotALiteralError);
    expect(() => sqlArrayLiteral([Number.NaN])).toThrow(RangeError);
    expect(() => sqlArrayLiteral([Number.POSITIVE_INFINITY])).toThrow(RangeError);
  });

  it('prepares a statement once per connection, also when it is already prepared there', async () => {
    const statement = { name: 'writ_spec_echo', text: `SELECT $1::text[] AS v, $2::int AS n` };
    const client = await pool.connect();
    try {
      await client.query(`PREPARE ${statement.name} AS ${statement.text}`);
      await prepareOnce(client, [statement]); // 42P05 on this session: taken as prepared
      await prepareOnce(client, [statement]); // remembered: no round trip
      const { rows } = await client.query<{ v: string[]; n: number }>(executeStatement(statement, [sqlArrayLiteral(['a"b', null]), '7']));
      expect(rows[0]).toEqual({ v: ['a"b', null], n: 7 });
    } finally {
      client.release();
    }
  });
});
