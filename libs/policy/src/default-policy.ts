import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Where `npm run policies:build` writes the default policy, relative to the repository root. */
export const DEFAULT_POLICY_RELATIVE_PATH = join('policies', 'dist', 'bundle.tar.gz');

/**
 * The absolute path of the committed default policy bundle. The repository root is found by
 * walking up from this file to the `package.json` named `writ`, so that it works from the
 * sources (ts-node, jest) and from the compiled `dist/libs/policy/src/` alike.
 */
export function defaultPolicyPath(from: string = __dirname): string {
  return join(repositoryRoot(from), DEFAULT_POLICY_RELATIVE_PATH);
}

/** The nearest ancestor of `from` holding the `package.json` named `writ`. */
export function repositoryRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'writ') return dir;
      } catch {
        // An unreadable package.json is not ours: keep walking.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json named writ above ${from}`);
    dir = parent;
  }
}
