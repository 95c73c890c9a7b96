import type { Pool, PoolClient, QueryResult } from 'pg';

/** A node of an `EXPLAIN (FORMAT JSON)` plan, with the members the list suites read. */
export interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Index Cond'?: string;
  'Scan Direction'?: string;
  Plans?: PlanNode[];
}

/** Every node of a plan. */
export function planNodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(planNodes)];
}

/**
 * Runs `list` against a pool that records the statement it sends (on `client`), then explains
 * that statement as sent, with its values: what the code really asks, not a copy of its SQL.
 */
export async function explainAsSent<T>(client: PoolClient, list: (recorder: Pool) => Promise<T>): Promise<{ result: T; nodes: PlanNode[] }> {
  let sent: { text: string; values: unknown[] } | undefined;
  const recorder = {
    query: (text: string, values: unknown[]): Promise<QueryResult> => {
      sent = { text, values };
      return client.query(text, values);
    },
  } as unknown as Pool;
  const result = await list(recorder);
  const explained = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`EXPLAIN (FORMAT JSON) ${sent!.text}`, sent!.values);
  return { result, nodes: planNodes(explained.rows[0]['QUERY PLAN'][0].Plan) };
}
