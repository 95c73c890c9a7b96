#!/usr/bin/env node
// `npm test`: the whole suite on a fresh machine.
//  1. Where the pinned opa is available (scripts/install-opa.sh; CI installs it): opa fmt,
//     opa check --strict, opa test --fail-on-empty, and the check that the committed compiled
//     policy is current. Without opa these are skipped with a note: the suite still runs
//     against the committed compiled policy.
//  2. TypeScript type check of everything (apps, libs, tests, bench), then lint (eslint with
//     typescript-eslint's type-aware rules) and the formatting check (prettier), zero findings.
//  3. jest: unit specs beside the code and the end-to-end suites in test/, on a throwaway
//     embedded PostgreSQL that the jest global setup starts and stops.
'use strict';
const { spawnSync } = require('node:child_process');
const { join } = require('node:path');

const root = join(__dirname, '..');
const node = process.execPath;
const run = (label, command, args) => {
  process.stdout.write(`\n== ${label}\n`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    process.stderr.write(`npm test: ${label} failed\n`);
    process.exit(result.status || 1);
  }
};

const found = spawnSync(node, [join(root, 'scripts', 'policies.js'), 'find'], { cwd: root, encoding: 'utf8' });
if (found.status === 0) {
  run('policies: opa fmt, check --strict, test', node, ['scripts/policies.js', 'test']);
  run('policies: committed bundle is current', node, ['scripts/policies.js', 'check']);
} else {
  process.stdout.write('\n== policies: opa not found, skipping opa fmt/check/test and the stale-bundle check (run scripts/install-opa.sh; CI runs them)\n');
}
run('typecheck', join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json', '--noEmit']);
run('typecheck (console)', join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'apps/admin/console/tsconfig.json', '--noEmit']);
run('lint: eslint', join(root, 'node_modules', '.bin', 'eslint'), ['.']);
run('format: prettier --check', join(root, 'node_modules', '.bin', 'prettier'), ['--check', '--log-level', 'warn', '.']);
run('jest (unit + end-to-end)', join(root, 'node_modules', '.bin', 'jest'), ['--ci', ...process.argv.slice(2)]);
