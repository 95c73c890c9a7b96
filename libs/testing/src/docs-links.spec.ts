import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';

// The docs link to each other by file and heading (`operations.md#process-life`); a renamed
// heading or a moved file breaks them silently. Every relative link of the README, docs/ and
// the SDK and policy READMEs must name an existing file, and an existing heading.

const root = join(__dirname, '..', '..', '..');
const DOCS = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
  'packages/sdk/README.md',
  'sdk/python/README.md',
  'policies/writ/README.md',
].filter((path) => existsSync(join(root, path)));

/** Markdown without its fenced code blocks (a `#` comment there is not a heading). */
function prose(path: string): string {
  return readFileSync(join(root, path), 'utf8').replace(/^```[\s\S]*?^```/gm, '');
}

/** GitHub's anchors: lower case, punctuation dropped, spaces as hyphens, `-1`, `-2` for repeats. */
function anchors(path: string): Set<string> {
  const seen = new Map<string, number>();
  const found = new Set<string>();
  for (const [, heading] of prose(path).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = heading
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\- _]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    found.add(count === 0 ? slug : `${slug}-${count}`);
    seen.set(slug, count + 1);
  }
  return found;
}

describe('links between the docs', () => {
  it('resolve to a file and, when they name one, a heading', () => {
    expect(DOCS.length).toBeGreaterThan(10);
    const broken: string[] = [];
    for (const doc of DOCS) {
      for (const [, target] of prose(doc).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        const [file, anchor] = target.split('#');
        const path = file ? normalize(join(dirname(doc), file)) : doc;
        if (!existsSync(join(root, path))) broken.push(`${doc}: ${target} (no file ${relative('.', path)})`);
        else if (anchor !== undefined && path.endsWith('.md') && !anchors(path).has(anchor)) broken.push(`${doc}: ${target} (no heading)`);
      }
    }
    expect(broken).toEqual([]);
  });
});

describe('commands the docs name', () => {
  const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const text = DOCS.map((doc) => readFileSync(join(root, doc), 'utf8')).join('\n');

  it('are npm scripts of package.json', () => {
    const named = new Set([...text.matchAll(/\bnpm run ([a-z][a-z0-9:-]*[a-z0-9])/g)].map((m) => m[1]));
    // `npm run policies:build` / `policies:test`: the table's shorthand for the others of a family.
    for (const [, family, more] of text.matchAll(/`npm run ([a-z]+):[a-z-]+`((?:(?: \/|,) `[a-z0-9:-]+`)+)/g)) {
      for (const [, name] of more.matchAll(/`([a-z0-9:-]+)`/g)) named.add(name.includes(':') ? name : `${family}:${name}`);
    }
    expect([...named].filter((name) => !(name in scripts))).toEqual([]);
  });

  it('pass the audit tools only flags they read', () => {
    for (const [script, source] of [
      ['audit:verify', 'scripts/audit-verify-command.ts'],
      ['audit:archive', 'scripts/audit-archive-command.ts'],
    ]) {
      const code = readFileSync(join(root, source), 'utf8');
      const flags = [...text.matchAll(new RegExp(`npm run ${script} -- ((?:\\\\\\n|[^\\n\`|])*)`, 'g'))].flatMap((m) =>
        [...m[1].matchAll(/--[a-z-]+/g)].map((f) => f[0]),
      );
      expect(flags.length).toBeGreaterThan(0);
      expect([script, flags.filter((flag) => !code.includes(`'${flag}'`))]).toEqual([script, []]);
    }
  });
});
