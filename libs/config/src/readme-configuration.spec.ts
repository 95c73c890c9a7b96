import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// README's configuration table is what operators read; libs/config is what runs. This keeps
// them one list: every variable read is documented, every documented one is read, and each
// numeric default is the same in the table, in the code and in the code's own doc comment.

const root = join(__dirname, '..', '..', '..');
const source = readFileSync(join(__dirname, 'writ-config.ts'), 'utf8');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

interface Row {
  variables: string[];
  defaults: string;
  meaning: string;
}

function configurationTable(): Row[] {
  const section = readme.split(/^## Configuration$/m)[1].split(/^## /m)[0];
  return section
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => {
      const [variables, defaults, ...meaning] = line.slice(1, -1).split(' | ');
      return { variables: names(variables), defaults, meaning: meaning.join(' | ') };
    });
}

function names(text: string): string[] {
  return [...text.matchAll(/`((?:WRIT|OTEL)_[A-Z_]+)`/g)].map((m) => m[1]);
}

/** The variables libs/config reads: `env.NAME` or a helper called with `'NAME'`. */
const read = new Set([...source.matchAll(/(?:env\.|')((?:WRIT|OTEL)_[A-Z_]+)\b/g)].map((m) => m[1]));

/** `1024 * 1024`, `30_000`: the number. */
function product(expression: string): string {
  return String(expression.split('*').reduce((acc, factor) => acc * Number(factor.trim().replace(/_/g, '')), 1));
}

/** Numeric defaults as the code applies them: `integer(env, 'NAME', 5000, ...)`, `port(env, 'NAME', 4000, ...)`. */
const codeDefaults = new Map([...source.matchAll(/(?:integer|port)\(env, '([A-Z_]+)', ([0-9_ *]+),/g)].map((m) => [m[1], product(m[2])]));

describe('README configuration table', () => {
  const rows = configurationTable();
  const documented = new Set(rows.flatMap((row) => [...row.variables, ...names(row.meaning)]));

  it('documents every variable libs/config reads', () => {
    expect([...read].filter((name) => !documented.has(name))).toEqual([]);
  });

  it('documents only variables libs/config reads', () => {
    const stale = rows.flatMap((row) => row.variables).filter((name) => !read.has(name));
    expect(stale).toEqual([]);
  });

  it('gives each numeric variable the default the code applies', () => {
    expect(codeDefaults.size).toBeGreaterThan(20);
    const mismatches: string[] = [];
    for (const [name, value] of codeDefaults) {
      const row = rows.find((r) => r.variables.includes(name) || names(r.meaning).includes(name));
      if (!row) continue; // the first test names it
      let documentedDefault: string | undefined;
      if (row.variables.includes(name)) {
        const numbers = [...row.defaults.matchAll(/`?([0-9]+)`?/g)].map((m) => m[1]);
        documentedDefault = numbers.length === row.variables.length ? numbers[row.variables.indexOf(name)] : numbers[0];
      } else {
        documentedDefault = new RegExp(`\`${name}\` \\(([0-9]+)\\)`).exec(row.meaning)?.[1];
      }
      if (documentedDefault !== value) mismatches.push(`${name}: README ${documentedDefault}, code ${value}`);
    }
    expect(mismatches).toEqual([]);
  });

  it('agrees with the doc comments in libs/config', () => {
    const mismatches: string[] = [];
    for (const m of source.matchAll(/`([A-Z_]+)` \(default ([0-9]+)/g)) {
      const value = codeDefaults.get(m[1]);
      if (value !== undefined && value !== m[2]) mismatches.push(`${m[1]}: comment ${m[2]}, code ${value}`);
    }
    expect(mismatches).toEqual([]);
  });
});
