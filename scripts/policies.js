#!/usr/bin/env node
/**
 * Builds, tests and checks the Rego policies with the pinned opa (policies/OPA_VERSION).
 *
 *   node scripts/policies.js build     compile policies/writ to policies/dist/bundle.tar.gz (WASM)
 *   node scripts/policies.js test      opa fmt (fail on unformatted), opa check --strict, opa test
 *   node scripts/policies.js check     fail when the committed bundle differs from a fresh build
 *   node scripts/policies.js fixtures  rebuild the WASM test fixtures of libs/policy
 *   node scripts/policies.js find      print the opa that would be used (exit 3 when none)
 *
 * opa is found as: $WRIT_OPA, else ${WRIT_TOOLS_DIR:-$HOME/.cache/writ/tools}/opa-<version>/opa
 * (where scripts/install-opa.sh puts it), else `opa` on PATH.
 */
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const root = path.resolve(__dirname, '..');
const policyDir = path.join(root, 'policies', 'writ');
const bundlePath = path.join(root, 'policies', 'dist', 'bundle.tar.gz');
const entrypoint = 'writ/grant/decision';
const fixturesDir = path.join(root, 'libs', 'policy', 'test-fixtures');

/** Files compared by `check`: the compiled policy and the data shipped with it. */
const COMPARED = ['/policy.wasm', '/data.json'];

function fail(message) {
  process.stderr.write(`policies: ${message}\n`);
  process.exit(1);
}

function pinnedVersion() {
  return fs.readFileSync(path.join(root, 'policies', 'OPA_VERSION'), 'utf8').trim();
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function onPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

function findOpa() {
  const version = pinnedVersion();
  if (process.env.WRIT_OPA) {
    if (!isExecutable(process.env.WRIT_OPA)) fail(`WRIT_OPA=${process.env.WRIT_OPA} is not an executable file`);
    return process.env.WRIT_OPA;
  }
  const toolsDir = process.env.WRIT_TOOLS_DIR || path.join(os.homedir(), '.cache', 'writ', 'tools');
  const pinned = path.join(toolsDir, `opa-${version}`, 'opa');
  if (isExecutable(pinned)) return pinned;
  const fromPath = onPath('opa');
  if (fromPath) return fromPath;
  fail(`opa ${version} not found (WRIT_OPA, ${pinned}, PATH): run scripts/install-opa.sh`);
}

/** Warns (does not fail) when the opa found is not the pinned version: its WASM may differ. */
function warnOnVersionMismatch(opa) {
  const res = spawnSync(opa, ['version'], { encoding: 'utf8' });
  const match = /^Version:\s*(\S+)/m.exec(res.stdout || '');
  const found = match ? `v${match[1].replace(/^v/, '')}` : 'an unknown version';
  const pinned = pinnedVersion();
  if (found !== pinned) {
    process.stderr.write(`policies: warning: ${opa} is ${found}, the pinned version is ${pinned} (scripts/install-opa.sh)\n`);
  }
}

function run(opa, args, options = {}) {
  process.stderr.write(`$ opa ${args.join(' ')}\n`);
  const res = spawnSync(opa, args, { cwd: root, stdio: 'inherit', ...options });
  if (res.error) fail(`could not run ${opa}: ${res.error.message}`);
  return res.status === 0;
}

/**
 * `opa build` arguments for the WASM bundle; the test files stay out of the bundle. Run
 * from the repository root with a relative path: the module embeds the source paths, so
 * this is what makes two builds byte-identical on any machine.
 */
function buildArgs(output) {
  return [
    'build',
    '--bundle',
    '--target',
    'wasm',
    '--entrypoint',
    entrypoint,
    '--ignore',
    '*_test.rego',
    '--ignore',
    'README.md',
    '--output',
    output,
    path.relative(root, policyDir),
  ];
}

/**
 * The regular files of a .tar.gz as a Map of '/name' → Buffer. A minimal reader for
 * what `opa build` writes (ustar; PAX and GNU long names handled for safety).
 */
function readTarGz(buffer) {
  const tar = zlib.gunzipSync(buffer);
  const files = new Map();
  let offset = 0;
  let longName;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const field = (start, length) =>
      header
        .subarray(start, start + length)
        .toString('utf8')
        .replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1) || '0';
    const prefix = field(345, 155);
    let name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    const body = tar.subarray(offset + 512, offset + 512 + size);
    offset += 512 + Math.ceil(size / 512) * 512;
    if (type === 'L') {
      longName = body.toString('utf8').replace(/\0.*$/s, '');
    } else if (type === 'x') {
      const m = /\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
      if (m) longName = m[1];
    } else if (type === '0' || type === '\0') {
      name = `/${name.replace(/^\.?\/+/, '')}`;
      files.set(name, Buffer.from(body));
    }
  }
  return files;
}

function build() {
  const opa = findOpa();
  warnOnVersionMismatch(opa);
  fs.mkdirSync(path.dirname(bundlePath), { recursive: true });
  if (!run(opa, buildArgs(path.relative(root, bundlePath)))) fail('opa build failed');
  const files = readTarGz(fs.readFileSync(bundlePath));
  for (const name of COMPARED) if (!files.has(name)) fail(`the built bundle has no ${name}`);
  process.stdout.write(`wrote ${path.relative(root, bundlePath)} (policy.wasm ${files.get('/policy.wasm').length} bytes)\n`);
}

function test() {
  const opa = findOpa();
  warnOnVersionMismatch(opa);
  const steps = [
    ['fmt', '--list', '--fail', 'policies'],
    ['check', '--strict', 'policies/writ'],
    ['test', '--fail-on-empty', '-v', 'policies/writ'],
  ];
  let ok = true;
  for (const args of steps) ok = run(opa, args) && ok;
  if (!ok) fail('policy tests failed');
}

function check() {
  if (!fs.existsSync(bundlePath)) fail('no committed policy bundle: run npm run policies:build');
  const opa = findOpa();
  warnOnVersionMismatch(opa);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'writ-policies-'));
  try {
    const fresh = path.join(dir, 'bundle.tar.gz');
    if (!run(opa, buildArgs(fresh), { stdio: ['ignore', 'ignore', 'inherit'] })) fail('opa build failed');
    const committed = readTarGz(fs.readFileSync(bundlePath));
    const rebuilt = readTarGz(fs.readFileSync(fresh));
    for (const name of COMPARED) {
      const a = committed.get(name);
      const b = rebuilt.get(name);
      if (!a || !b || !a.equals(b)) {
        process.stderr.write(`policies: ${name} differs\n`);
        fail('committed policy bundle is stale: run npm run policies:build');
      }
    }
    process.stdout.write('committed policy bundle is up to date\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Rebuilds libs/policy/test-fixtures/<name>.wasm from each <name>/ folder there; the
 * folder's `entrypoint` file names the entrypoint to compile.
 */
function fixtures() {
  const opa = findOpa();
  warnOnVersionMismatch(opa);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'writ-fixtures-'));
  try {
    for (const entry of fs.readdirSync(fixturesDir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const src = path.join(fixturesDir, entry.name);
      const ep = fs.readFileSync(path.join(src, 'entrypoint'), 'utf8').trim();
      const out = path.join(dir, `${entry.name}.tar.gz`);
      const args = ['build', '--bundle', '--target', 'wasm', '--entrypoint', ep, '--ignore', 'entrypoint', '--output', out, path.relative(root, src)];
      if (!run(opa, args)) fail(`opa build of fixture ${entry.name} failed`);
      const wasm = readTarGz(fs.readFileSync(out)).get('/policy.wasm');
      fs.writeFileSync(path.join(fixturesDir, `${entry.name}.wasm`), wasm);
      process.stdout.write(`wrote ${path.relative(root, path.join(fixturesDir, `${entry.name}.wasm`))}\n`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Prints the opa that would be used, or exits 3 (quietly) when there is none. */
function find() {
  const version = pinnedVersion();
  const toolsDir = process.env.WRIT_TOOLS_DIR || path.join(os.homedir(), '.cache', 'writ', 'tools');
  const candidates = [process.env.WRIT_OPA, path.join(toolsDir, `opa-${version}`, 'opa'), onPath('opa')];
  const opa = candidates.find((candidate) => candidate && isExecutable(candidate));
  if (!opa) process.exit(3);
  process.stdout.write(`${opa}\n`);
}

const commands = { build, test, check, fixtures, find };
const command = process.argv[2];
if (!Object.hasOwn(commands, command)) {
  fail(`usage: node scripts/policies.js ${Object.keys(commands).join('|')}`);
}
commands[command]();
