import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { canonicalJson } from './canonical-json';
import { defaultPolicyPath, repositoryRoot } from './default-policy';
import { readPolicyBundle } from './policy-bundle';

describe('defaultPolicyPath', () => {
  const root = join(__dirname, '..', '..', '..');

  it('is the committed bundle, from the sources', () => {
    expect(defaultPolicyPath()).toBe(join(root, 'policies', 'dist', 'bundle.tar.gz'));
    expect(existsSync(defaultPolicyPath())).toBe(true);
  });

  it('is the same from the compiled output directory', () => {
    expect(defaultPolicyPath(join(root, 'dist', 'libs', 'policy', 'src'))).toBe(defaultPolicyPath());
  });

  it('fails outside the repository', () => {
    expect(() => repositoryRoot('/')).toThrow(/no package.json named writ/);
  });
});

// The full check (`node scripts/policies.js check`) needs opa; this one catches the most
// common slip, editing policies/writ/data.json without rebuilding, with Node alone.
describe('the committed default bundle', () => {
  it('ships the data of policies/writ/data.json', () => {
    const root = repositoryRoot();
    const source = JSON.parse(readFileSync(join(root, 'policies', 'writ', 'data.json'), 'utf8'));
    const bundle = readPolicyBundle(readFileSync(defaultPolicyPath()));
    expect(canonicalJson(bundle.data)).toBe(canonicalJson(source));
  });
});
