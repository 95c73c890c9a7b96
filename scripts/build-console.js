#!/usr/bin/env node
// Bundles the admin console (apps/admin/console, Preact + TypeScript) with esbuild into
// dist/console: one script, one stylesheet and index.html, no inline code, so that the
// admin app can serve it under a CSP of `script-src 'self'; style-src 'self'`.
// Run alone (`node scripts/build-console.js`) or from scripts/build.js.
'use strict';
const { copyFileSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const source = join(root, 'apps', 'admin', 'console');
const out = join(root, 'dist', 'console');

/** Builds the console into dist/console; throws on a build error. */
function buildConsole() {
  const esbuild = require('esbuild');
  mkdirSync(out, { recursive: true });
  esbuild.buildSync({
    entryPoints: [join(source, 'main.tsx')],
    bundle: true,
    outdir: out,
    entryNames: '[name]',
    format: 'esm',
    target: ['chrome120', 'firefox120', 'safari17'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
  });
  copyFileSync(join(source, 'index.html'), join(out, 'index.html'));
}

module.exports = { buildConsole, consoleSource: source, consoleOut: out };

if (require.main === module) {
  try {
    buildConsole();
  } catch {
    process.stderr.write('writ: console build failed (see the errors above)\n');
    process.exit(1);
  }
}
