import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { canonicalJson } from './canonical-json';
import { PolicyLoadError } from './policy-errors';
import { readTarGz } from './read-tar-gz';

/** The entrypoint every Writ policy must export: package `writ.grant`, rule `decision`. */
export const DEFAULT_ENTRYPOINT = 'writ/grant/decision';

/** A policy ready to load: its compiled module, the data document it runs with, its version. */
export interface PolicyBundle {
  /** The OPA WebAssembly module. */
  readonly wasm: Buffer;
  /** The data document (`data` in Rego); `{}` for a bare `.wasm`. */
  readonly data: Record<string, unknown>;
  /** See {@link policyVersion}. */
  readonly version: string;
  /** What the bytes were: a bare module or an `opa build` bundle. */
  readonly format: 'wasm' | 'bundle';
}

const WASM_MAGIC = Buffer.from([0x00, 0x61, 0x73, 0x6d]);
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);

/**
 * The policy's version, a lowercase SHA-256 hex string:
 * - a bare `.wasm` (no data): SHA-256 of the module's bytes, so `sha256sum policy.wasm` gives it;
 * - a module with data (an `opa build` bundle, or {@link PolicyEngine.withData}):
 *   SHA-256( SHA-256(wasm) ‖ SHA-256(JCS(data)) ), the two raw 32-byte digests concatenated,
 *   JCS being RFC 8785 canonical JSON. The tar/gzip framing and the `.rego` sources in a
 *   bundle do not count: two bundles that run the same module on the same data share a version.
 */
export function policyVersion(wasm: Uint8Array, data?: unknown): string {
  const wasmDigest = createHash('sha256').update(wasm).digest();
  if (data === undefined) return wasmDigest.toString('hex');
  const dataDigest = createHash('sha256').update(canonicalJson(data), 'utf8').digest();
  return createHash('sha256').update(wasmDigest).update(dataDigest).digest('hex');
}

/**
 * Reads a policy from the bytes of a `.wasm` module or of an `opa build -t wasm` bundle
 * (`.tar.gz`), told apart by their magic bytes. For a bundle: the module is the one the
 * `.manifest` lists for `entrypoint` (else `/policy.wasm`), and the data is every
 * `data.json` merged at its directory's path. Throws {@link PolicyLoadError}.
 */
export function readPolicyBundle(bytes: Uint8Array, options: { entrypoint?: string } = {}): PolicyBundle {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.subarray(0, 4).equals(WASM_MAGIC)) {
    const wasm = Buffer.from(buffer);
    return { wasm, data: {}, version: policyVersion(wasm), format: 'wasm' };
  }
  if (!buffer.subarray(0, 2).equals(GZIP_MAGIC)) {
    throw new PolicyLoadError('POLICY_FORMAT_INVALID', 'the policy is neither a WebAssembly module nor an opa build bundle (.tar.gz)');
  }
  let files: Map<string, Buffer>;
  try {
    files = readTarGz(buffer);
  } catch (error) {
    throw new PolicyLoadError('POLICY_FORMAT_INVALID', `the policy bundle is not a valid .tar.gz: ${describe(error)}`, { cause: error });
  }
  const wasm = files.get(wasmModulePath(files, options.entrypoint ?? DEFAULT_ENTRYPOINT));
  if (!wasm) {
    throw new PolicyLoadError('POLICY_WASM_MISSING', 'the policy bundle holds no policy.wasm: build it with opa build -t wasm');
  }
  let data: Record<string, unknown>;
  let version: string;
  try {
    data = bundleData(files);
    version = policyVersion(wasm, data);
  } catch (error) {
    if (error instanceof PolicyLoadError) throw error;
    // JSON.parse takes data nested deeper than the merge and the hashing can recurse.
    throw new PolicyLoadError('POLICY_DATA_INVALID', `the policy data cannot be read (nested too deeply?): ${describe(error)}`, { cause: error });
  }
  return { wasm, data, version, format: 'bundle' };
}

/** Reads {@link readPolicyBundle} from a file. Throws {@link PolicyLoadError}. */
export async function readPolicyFile(path: string, options: { entrypoint?: string } = {}): Promise<PolicyBundle> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new PolicyLoadError('POLICY_FILE_UNREADABLE', `cannot read the policy ${path}: ${describe(error)}`, { cause: error });
  }
  return readPolicyBundle(bytes, options);
}

function wasmModulePath(files: Map<string, Buffer>, entrypoint: string): string {
  const manifest = files.get('/.manifest');
  if (manifest) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(manifest.toString('utf8'));
    } catch (error) {
      throw new PolicyLoadError('POLICY_FORMAT_INVALID', 'the policy bundle has an invalid .manifest', { cause: error });
    }
    const modules = isObject(parsed) && Array.isArray(parsed.wasm) ? parsed.wasm : [];
    for (const module of modules) {
      if (isObject(module) && module.entrypoint === entrypoint && typeof module.module === 'string') {
        return `/${module.module.replace(/^\/+/, '')}`;
      }
    }
  }
  return '/policy.wasm';
}

/**
 * The largest data a bundle may hold (its `data.json` files together). A policy runs in 64 MiB of
 * WebAssembly memory, where parsed data takes several times its JSON size (5 MB of small objects
 * no longer loads), but reading and hashing data costs the event loop about a second per 5 MB:
 * 60 MB that gzip to a few hundred KB held every service of the process for tens of seconds
 * before the policy's memory refused them.
 */
export const MAX_POLICY_DATA_BYTES = 8 * 1024 * 1024;

function bundleData(files: Map<string, Buffer>): Record<string, unknown> {
  let size = 0;
  for (const [path, content] of files) if (path.endsWith('/data.json')) size += content.length;
  if (size > MAX_POLICY_DATA_BYTES) {
    throw new PolicyLoadError('POLICY_DATA_INVALID', `the policy data (${size} bytes of data.json) is larger than 8 MiB, more than a policy's memory can hold`);
  }
  const data: Record<string, unknown> = {};
  // Shallow paths first, so that a nested data.json merges into its parent's document.
  const paths = [...files.keys()].sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1));
  for (const path of paths) {
    const base = path.slice(path.lastIndexOf('/') + 1);
    if (base === 'data.yaml' || base === 'data.yml') {
      throw new PolicyLoadError('POLICY_DATA_INVALID', `${path}: YAML data is not supported in a policy bundle, use data.json`);
    }
    if (base !== 'data.json') continue;
    let value: unknown;
    try {
      value = JSON.parse(files.get(path)!.toString('utf8'));
    } catch (error) {
      throw new PolicyLoadError('POLICY_DATA_INVALID', `${path} is not valid JSON`, { cause: error });
    }
    if (!isObject(value)) throw new PolicyLoadError('POLICY_DATA_INVALID', `${path} must hold a JSON object`);
    const segments = path.split('/').slice(1, -1);
    let target = data;
    for (const segment of segments) {
      const next = own(target, segment);
      if (next === undefined) setOwn(target, segment, {});
      else if (!isObject(next)) throw new PolicyLoadError('POLICY_DATA_INVALID', `${path} conflicts with data at ${segment}`);
      target = own(target, segment) as Record<string, unknown>;
    }
    mergeInto(target, value, path);
  }
  return data;
}

function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>, path: string): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = own(target, key);
    if (existing === undefined) setOwn(target, key, value);
    else if (isObject(existing) && isObject(value)) mergeInto(existing, value, path);
    else throw new PolicyLoadError('POLICY_DATA_INVALID', `${path} conflicts with other data at key ${key}`);
  }
}

/** Own properties only: a key such as `__proto__` in the data must stay plain data. */
function own(target: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(target, key) ? target[key] : undefined;
}

function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
