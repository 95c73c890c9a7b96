import { Pool } from 'pg';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { queryThenCommit } from './query-then-commit';

describe('queryThenCommit', () => {
  let db: TestDatabase;
  let pool: Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 2 });
    await pool.query('CREATE TABLE qtc (n int PRIMARY KEY)');
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  const insert = (n: number) => ({ name: 'qtc_insert', text: 'INSERT INTO qtc (n) SELECT unnest($1::int[])', values: [[n]] });

  it('commits what the transaction did, the statement included, and leaves the connection usable', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN; INSERT INTO qtc VALUES (1)');
      await queryThenCommit(client, insert(2));
      // Outside any transaction now: a ROLLBACK undoes nothing.
      await client.query('ROLLBACK');
      await client.query('BEGIN');
      await queryThenCommit(client, insert(3));
    } finally {
      client.release();
    }
    expect((await pool.query<{ n: number }>('SELECT n FROM qtc ORDER BY n')).rows.map((row) => row.n)).toEqual([1, 2, 3]);
  });

  it('commits nothing when the statement fails: the COMMIT in its message is skipped and the caller rolls back', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN; INSERT INTO qtc VALUES (10)');
      // 1 exists: the statement fails after the transaction inserted 10.
      await expect(queryThenCommit(client, insert(1))).rejects.toThrow(/duplicate key/);
      await expect(client.query('SELECT 1')).rejects.toThrow(/current transaction is aborted/);
      await client.query('ROLLBACK');
      expect((await client.query<{ n: number }>('SELECT count(*)::int AS n FROM qtc WHERE n = 10')).rows[0].n).toBe(0);
    } finally {
      client.release();
    }
  });
});
