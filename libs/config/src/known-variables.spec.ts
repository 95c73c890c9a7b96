import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KNOWN_VARIABLES } from './known-variables';

describe('KNOWN_VARIABLES', () => {
  it('is exactly the WRIT_ variables libs/config reads, so none is reported unknown by mistake', () => {
    const source = readFileSync(join(__dirname, 'writ-config.ts'), 'utf8');
    const read = new Set([...source.matchAll(/(?:env\.|env\[|')(WRIT_[A-Z_]+)\b/g)].map((m) => m[1]));
    expect([...KNOWN_VARIABLES].sort()).toEqual([...read].sort());
  });
});
