import { http } from './oauth-client';

/** One series' value in a Prometheus text exposition (`undefined`: no such series). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.keys(found).length === Object.keys(labels).length && Object.entries(labels).every(([key, value]) => found[key] === value)) {
      return Number(match[3]);
    }
  }
  return undefined;
}

/** `GET /metrics` of a service (no `WRIT_METRICS_TOKEN` in the suites): the exposition's text. */
export async function scrape(baseUrl: string): Promise<string> {
  const response = await http(`${baseUrl}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return response.text;
}

/** The tables of the row-integrity refusals logged at error level (one entry per refusal), counted. */
export function loggedIntegrityRefusals(logs: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of logs) {
    const entry = JSON.parse(line) as { level: number; table?: string; msg: string };
    if (entry.level === 50 && entry.table && /does not carry a valid integrity tag/.test(entry.msg)) counts[entry.table] = (counts[entry.table] ?? 0) + 1;
  }
  return counts;
}

/** `writ_integrity_failures_total` by table, leaving out the tables at 0. */
export function integrityFailures(text: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const [, table, value] of text.matchAll(/^writ_integrity_failures_total\{table="([a-z_]+)"\} (\d+)$/gm)) {
    if (Number(value) > 0) counts[table] = Number(value);
  }
  return counts;
}
