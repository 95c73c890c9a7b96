import type { PoolClient } from 'pg';

/**
 * Watches a connection checked out of a pg pool (pg-pool listens for errors only on idle
 * ones): an error it reports while checked out, e.g. PostgreSQL terminating it, is noted
 * instead of becoming an unhandled `error` event that ends the process. Returns the release:
 * a connection that broke, or that the caller says failed, is destroyed, never handed back.
 */
export function watchCheckedOut(client: PoolClient): (failed?: boolean) => void {
  let broken = false;
  const onError = () => {
    broken = true;
  };
  client.on('error', onError);
  return (failed = false) => {
    client.off('error', onError);
    client.release(broken || failed);
  };
}
