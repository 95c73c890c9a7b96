import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// docs/audit.md promises every audit event type with its fields; security engineers query the
// log by those names. This keeps the list and the code one set.

const root = join(__dirname, '..', '..', '..');
const doc = readFileSync(join(root, 'docs', 'audit.md'), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' || entry.name === 'testing' || entry.name === 'console' ? [] : sources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.spec.ts') ? [path] : [];
  });
}

/** Types built from a template (`task.${status}`, `approval.${decision}`): what each can become. */
const TEMPLATES: Record<string, string[]> = {
  'task.${status}': ['task.completed', 'task.failed', 'task.expired', 'task.revoked'],
  'approval.${decision}': ['approval.approved', 'approval.denied'],
};

function recordedTypes(): Set<string> {
  const types = new Set<string>();
  for (const file of [...sources(join(root, 'apps')), ...sources(join(root, 'libs')), ...sources(join(root, 'scripts'))]) {
    const text = readFileSync(file, 'utf8');
    // `type: 'token.issued'` in an event, `this.event('connection.refreshed', ...)` or `this.event(call, 'gateway.call', ...)`.
    for (const m of text.matchAll(/(?:\btype: |\bevent\(\s*(?:[a-z]+,\s*)?)'([a-z_]+(?:\.[a-z_]+)+)'/g)) types.add(m[1]);
    for (const m of text.matchAll(/\btype: `([a-z_]+\.\$\{[a-z]+\})`/g)) {
      const expansion = TEMPLATES[m[1]];
      if (!expansion) throw new Error(`${file}: an event type template this test does not know: ${m[1]}`);
      expansion.forEach((type) => types.add(type));
    }
  }
  return types;
}

describe('docs/audit.md', () => {
  const recorded = recordedTypes();
  const mentioned = new Set([...doc.matchAll(/`([a-z_]+(?:\.[a-z_]+)+)`/g)].map((m) => m[1]));
  /** The first cell of each event table row (`| \`a\`, \`b\` | ...` or `a` / `b`). */
  const listed = doc
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => line.split(' | ')[0])
    .flatMap((cell) => [...cell.matchAll(/`([a-z_]+(?:\.[a-z_]+)+)`/g)].map((m) => m[1]));

  it('finds the recorded types in the code', () => {
    expect(recorded.size).toBeGreaterThan(40);
    expect(recorded).toContain('token.issued');
  });

  it('names every event type the services record', () => {
    expect([...recorded].filter((type) => !mentioned.has(type)).sort()).toEqual([]);
  });

  it('lists no event type the services do not record', () => {
    expect(listed.filter((type) => !recorded.has(type))).toEqual([]);
  });
});
