import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { Counter, Gauge, Histogram } from 'prom-client';
import { WritMetrics } from './metrics';

// docs/operations.md lists every metric with its type and labels, and its alerts and the
// Grafana dashboard query them by name: a renamed metric silently empties a panel or an alert.

const root = join(__dirname, '..', '..', '..');
const operations = readFileSync(join(root, 'docs', 'operations.md'), 'utf8');
const dashboard = readFileSync(join(root, 'docs', 'grafana-dashboard.json'), 'utf8');

function section(title: string): string {
  return operations.split(new RegExp(`^## ${title}$`, 'm'))[1].split(/^## /m)[0];
}

/** Every metric a runtime registers (with a pool, a policy, checkpoints and a master key), but prom-client's defaults. */
function registered(): Map<string, { type: string; labels: string[] }> {
  const pool = { totalCount: 0, idleCount: 0, waitingCount: 0, query: () => Promise.resolve({ rows: [] }) } as unknown as Pool;
  const metrics = new WritMetrics(pool, { defaultMetrics: false });
  metrics.trackPolicyVersion(() => 'v');
  metrics.trackCheckpoints(() => ({ unsignedEvents: 0, failures: 0, lastSuccessMs: undefined }));
  metrics.trackMasterKey(() => 0);
  const found = new Map<string, { type: string; labels: string[] }>();
  for (const metric of metrics.registry.getMetricsAsArray()) {
    const type = metric instanceof Counter ? 'counter' : metric instanceof Gauge ? 'gauge' : metric instanceof Histogram ? 'histogram' : 'other';
    const labels = ((metric as unknown as { labelNames?: string[] }).labelNames ?? []).slice().sort();
    found.set((metric as unknown as { name: string }).name, { type, labels });
  }
  metrics.close();
  return found;
}

describe('docs/operations.md metrics', () => {
  const metrics = registered();
  const table = section('Metrics')
    .split('\n')
    .filter((line) => line.startsWith('| `writ_'))
    .map((line) => {
      const [name, type, labels] = line.slice(2).split(' | ');
      return {
        name: name.replace(/`/g, ''),
        type: type.split(' ')[0],
        // The label names: backticked words outside parentheses.
        labels: [...labels.replace(/\([^)]*\)/g, '').matchAll(/`([a-z_]+)`/g)].map((m) => m[1]).sort(),
      };
    })
    .filter((row) => !row.name.endsWith('*'));

  it('documents every registered metric, with its type and labels', () => {
    expect(metrics.size).toBeGreaterThan(15);
    const documented = new Map(table.map((row) => [row.name, { type: row.type, labels: row.labels }]));
    for (const [name, shape] of metrics) expect({ name, ...documented.get(name) }).toEqual({ name, ...shape });
  });

  it('documents no metric that is not registered', () => {
    expect(table.map((row) => row.name).filter((name) => !metrics.has(name))).toEqual([]);
  });

  it('queries only registered metrics in its alerts and in the Grafana dashboard', () => {
    const queried = [...`${section('Alerts worth setting')}\n${dashboard}`.matchAll(/\bwrit_[a-z_]+/g)].map((m) => m[0]);
    expect(queried.length).toBeGreaterThan(10);
    const unknown = queried.filter((name) => !metrics.has(name) && !metrics.has(name.replace(/_(bucket|sum|count)$/, '')));
    expect([...new Set(unknown)]).toEqual([]);
  });
});
