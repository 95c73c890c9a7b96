import type { EmbeddedDatabase } from '../../database/src'; // global setup runs outside jest's module mapper

/** Stops the throwaway PostgreSQL the global setup started. */
export default async function globalTeardown(): Promise<void> {
  const database = (globalThis as { __writDatabase?: EmbeddedDatabase }).__writDatabase;
  if (database) await database.stop();
}
