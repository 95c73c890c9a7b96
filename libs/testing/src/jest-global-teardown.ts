import { rm } from 'node:fs/promises';
import type { EmbeddedDatabase } from '../../database/src'; // global setup runs outside jest's module mapper

/** Stops the throwaway PostgreSQL the global setup started and removes its data directory. */
export default async function globalTeardown(): Promise<void> {
  const database = (globalThis as { __writDatabase?: EmbeddedDatabase }).__writDatabase;
  if (database) await database.stop();
  const dataDir = (globalThis as { __writDataDir?: string }).__writDataDir;
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}
