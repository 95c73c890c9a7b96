import { Pool } from 'pg';
import { createTestDatabase } from './test-database';

describe('createTestDatabase', () => {
  it('drops a database only once the backends of an ended pool are gone, terminating none of them', async () => {
    const db = await createTestDatabase();
    const pool = new Pool({ connectionString: db.url, max: 4 });
    const errors: string[] = [];
    pool.on('error', (error) => errors.push(error.message));
    // Four idle connections whose backends are slow to read the pool's goodbye: stopped until
    // after the drop has begun, as a loaded box can leave them unscheduled.
    const clients = await Promise.all(Array.from({ length: 4 }, () => pool.connect()));
    const pids = await Promise.all(clients.map(async (client) => (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid));
    clients.forEach((client) => client.release());
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    try {
      await pool.end();
      const dropped = db.drop();
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (const pid of pids) process.kill(pid, 'SIGCONT');
      await dropped;
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(errors).toEqual([]);
  });
});
