import { Query, type Connection, type PoolClient, type QueryConfig } from 'pg';

/**
 * A prepared statement and the `COMMIT` of its transaction in one message, answered by one
 * `Sync`: the statement's Bind/Describe/Execute, then `COMMIT` parsed, bound and executed as
 * the unnamed statement. One socket write and one round trip instead of two (on this VM a
 * loopback write wakes the backend, and the answer wakes Node again).
 *
 * If the statement fails, PostgreSQL skips every message up to the `Sync` (the `COMMIT`
 * included) and answers with the error: the transaction stays open and aborted, and the
 * caller rolls it back as before. The statement keeps its cached plan (named, parsed once per
 * connection), unlike a simple query with literals.
 */
class ThenCommit extends Query {
  // pg's extended-protocol step after Bind/Describe (`Query#_getRows`): it sends Execute and
  // Sync; here Execute, then the COMMIT, then the one Sync.
  _getRows(connection: Connection): void {
    connection.execute({ portal: '' }, false);
    connection.parse({ name: '', text: 'COMMIT', types: [] }, false);
    connection.bind({}, false);
    connection.execute({ portal: '' }, false);
    connection.sync();
  }
}

/** Runs `config` (a named statement with values) and commits the open transaction, in one round trip. */
export function queryThenCommit(client: PoolClient, config: QueryConfig & { name: string }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    client.query(new ThenCommit(config, (error) => (error ? reject(error) : resolve())));
  });
}
