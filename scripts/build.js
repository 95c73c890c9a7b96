#!/usr/bin/env node
// Compiles apps/, libs/, bench/ and scripts/ to dist/ with tsc, then rewrites the @writ/*
// path aliases to relative requires (tsc-alias). `--if-needed` skips the build when dist/
// is newer than every source file, so `npm start` is instant after the first run. The admin
// console (apps/admin/console) is bundled with esbuild into dist/console (build-console.js).
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync, readdirSync, statSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const stamp = join(root, 'dist', '.build-stamp');

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (/\.(ts|tsx|css|html)$/.test(entry.name)) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

if (process.argv.includes('--if-needed') && existsSync(stamp) && existsSync(join(root, 'dist', 'console', 'index.html'))) {
  const sources = ['apps', 'libs', 'bench', 'scripts']
    .map((dir) => join(root, dir))
    .filter(existsSync)
    .concat([join(root, 'tsconfig.json'), join(root, 'tsconfig.build.json'), join(root, 'package-lock.json')]);
  const newest = Math.max(...sources.map((path) => (statSync(path).isDirectory() ? newestSource(path) : statSync(path).mtimeMs)));
  if (statSync(stamp).mtimeMs >= newest) process.exit(0);
}

const bin = (name) => join(root, 'node_modules', '.bin', name);
try {
  execFileSync(bin('tsc'), ['-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  execFileSync(bin('tsc-alias'), ['-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  require('./build-console').buildConsole();
} catch {
  process.stderr.write('writ: build failed (see the TypeScript errors above)\n');
  process.exit(1);
}
writeFileSync(stamp, new Date().toISOString() + '\n');
