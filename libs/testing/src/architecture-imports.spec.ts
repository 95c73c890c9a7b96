import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// docs/architecture.md says which library may import which; eslint only refuses an app imported
// by a library. This checks every library's production imports against the doc's table, and
// that no app imports another but the launcher.

const root = join(__dirname, '..', '..', '..');
const doc = readFileSync(join(root, 'docs', 'architecture.md'), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' || entry.name === 'console' ? [] : sources(path);
    return /\.tsx?$/.test(entry.name) && !/\.(spec|e2e-spec)\.ts$/.test(entry.name) ? [path] : [];
  });
}

/** `libs/<name>` row → the libraries it may import (`nothing of Writ`: none). */
function allowedImports(): Map<string, Set<string>> {
  const table = doc.split(/^## Who may import whom$/m)[1].split(/^## /m)[0];
  const allowed = new Map<string, Set<string>>();
  for (const line of table.split('\n').filter((l) => l.startsWith('| `libs/'))) {
    const [parts, may] = line.slice(2).split(' | ');
    const names = may.includes('nothing of Writ') ? [] : [...may.matchAll(/`([a-z]+)`/g)].map((m) => m[1]);
    for (const [, lib] of parts.matchAll(/`libs\/([a-z]+)`/g)) allowed.set(lib, new Set(names));
  }
  return allowed;
}

describe('docs/architecture.md: who may import whom', () => {
  it("holds for every library's production code", () => {
    const allowed = allowedImports();
    const stray: string[] = [];
    for (const lib of readdirSync(join(root, 'libs'))) {
      if (lib === 'testing') continue; // test support, imported by specs and suites only
      const may = allowed.get(lib);
      if (!may) {
        stray.push(`libs/${lib}: no row in the table`);
        continue;
      }
      for (const file of sources(join(root, 'libs', lib, 'src'))) {
        for (const [, used] of readFileSync(file, 'utf8').matchAll(/from '@writ\/([a-z]+)'/g)) {
          if (used !== lib && !may.has(used)) stray.push(`${file.slice(root.length + 1)} imports @writ/${used}`);
        }
      }
    }
    expect(stray).toEqual([]);
  });

  it('holds for the apps: none imports another, but the launcher (the apps it runs)', () => {
    const apps = readdirSync(join(root, 'apps'));
    const stray: string[] = [];
    for (const app of apps) {
      for (const file of sources(join(root, 'apps', app))) {
        for (const [, other, rest] of readFileSync(file, 'utf8').matchAll(/from '(?:\.\.\/)+(?:apps\/)?([a-z-]+)\/(src\/[^']*)'/g)) {
          if (other === app || !apps.includes(other)) continue;
          if (app === 'launcher' && /^src\/[a-z-]+\.app$/.test(rest)) continue;
          stray.push(`${file.slice(root.length + 1)} imports apps/${other}/${rest}`);
        }
      }
    }
    expect(stray).toEqual([]);
  });
});

describe("docs/architecture.md: the domain library's operations", () => {
  it('are defined in libs/grants under the names the table gives', () => {
    const table = doc.split(/^## The domain library/m)[1].split(/^## /m)[0];
    const code = sources(join(root, 'libs', 'grants', 'src'))
      .map((file) => readFileSync(file, 'utf8'))
      .join('\n');
    const operations = table
      .split('\n')
      .filter((line) => line.startsWith('| `'))
      .flatMap((line) =>
        [
          ...line
            .slice(2)
            .split(' | ')[0]
            .matchAll(/`([A-Za-z]+)`/g),
        ].map((m) => m[1]),
      );
    expect(operations.length).toBeGreaterThan(20);
    // A method, a property holding one, or an exported function or constant.
    const defined = (name: string) =>
      new RegExp(`(^|\\s)(async |readonly |export (async )?function |export const |function )*${name}\\s*[(<=:]`, 'm').test(code);
    expect(operations.filter((name) => !defined(name))).toEqual([]);
  });
});
