import { loadPolicy, loadPolicySync, type LoadedPolicy } from '@open-policy-agent/opa-wasm';
import { denyDecision, normalizeDecision, type Decision } from './decision';
import { DEFAULT_ENTRYPOINT, policyVersion, readPolicyBundle, type PolicyBundle } from './policy-bundle';
import { PolicyEvaluationError, PolicyLoadError } from './policy-errors';
import type { PolicyInput } from './policy-input';
import type { PolicyProbeAnswer } from './policy-probe';

/** How to load a policy. */
export interface PolicyEngineOptions {
  /** The entrypoint to evaluate, `package/path/rule`. Default `writ/grant/decision`. */
  entrypoint?: string;
  /**
   * WebAssembly memory in 64 KiB pages. Default initial 5 (what the SDK uses), maximum 1024
   * (64 MiB): an input that would need more traps, which fails closed.
   */
  memory?: { initialPages?: number; maximumPages?: number };
}

/**
 * The slice of the WebAssembly global this engine uses, typed here because the project's
 * TypeScript libs (ES2023, Node 20 types) do not declare it.
 */
interface WasmModule {
  readonly __wasmModule?: never;
}
interface MemoryDescriptor {
  initial: number;
  maximum?: number;
}
const wasm = (
  globalThis as unknown as {
    WebAssembly: {
      compile(bytes: Uint8Array): Promise<WasmModule>;
      Module: { exports(module: WasmModule): Array<{ name: string; kind: string }> };
    };
  }
).WebAssembly;

/** Exports every OPA policy module has (ABI 1.x); checked before the SDK touches the module. */
const OPA_EXPORTS = ['opa_malloc', 'opa_json_parse', 'opa_json_dump', 'opa_heap_ptr_get', 'entrypoints', 'opa_wasm_abi_version'];

/** The deny answered when the policy traps; safe to show to a client. */
const EVALUATION_FAILED_REASON = 'the policy could not evaluate the request';

/**
 * A compiled Rego policy evaluated in-process with `@open-policy-agent/opa-wasm`, by its named
 * entrypoint. Loading refuses a module that is not an OPA policy or lacks the entrypoint;
 * evaluation always yields a well-formed {@link Decision}, failing closed.
 *
 * Not re-entrant, like the SDK's instance: evaluate is synchronous, so one engine serves a
 * whole Node.js process.
 */
export class PolicyEngine {
  private constructor(
    private readonly bundle: PolicyBundle,
    private readonly module: WasmModule,
    private instance: LoadedPolicy,
    private readonly entrypointId: number,
    /** The entrypoint evaluated. */
    readonly entrypoint: string,
    private readonly memory: MemoryDescriptor,
  ) {}

  /**
   * Loads a policy from the bytes of a `.wasm` module or an `opa build` bundle, or from a
   * {@link PolicyBundle} already read. Throws {@link PolicyLoadError}.
   */
  static async load(source: Uint8Array | PolicyBundle, options: PolicyEngineOptions = {}): Promise<PolicyEngine> {
    const entrypoint = options.entrypoint ?? DEFAULT_ENTRYPOINT;
    const bundle = ArrayBuffer.isView(source) ? readPolicyBundle(source, { entrypoint }) : source;
    let module: WasmModule;
    try {
      module = await wasm.compile(bundle.wasm);
    } catch (error) {
      throw new PolicyLoadError('POLICY_WASM_INVALID', `the policy module does not compile: ${describe(error)}`, { cause: error });
    }
    const exported = new Set(wasm.Module.exports(module).map((entry) => entry.name));
    const missing = OPA_EXPORTS.filter((name) => !exported.has(name));
    if (missing.length > 0) {
      throw new PolicyLoadError('POLICY_WASM_INVALID', `the module is not an OPA policy: it does not export ${missing.join(', ')}`);
    }
    const memory = {
      initial: options.memory?.initialPages ?? 5,
      maximum: options.memory?.maximumPages ?? 1024,
    };
    return PolicyEngine.instantiate(bundle, module, entrypoint, memory);
  }

  private static async instantiate(bundle: PolicyBundle, module: WasmModule, entrypoint: string, memory: MemoryDescriptor): Promise<PolicyEngine> {
    let instance: LoadedPolicy;
    try {
      instance = await loadPolicy(module, { ...memory });
    } catch (error) {
      throw new PolicyLoadError('POLICY_WASM_INVALID', `the module is not an OPA policy: ${describe(error)}`, { cause: error });
    }
    const entrypoints: unknown = instance.entrypoints;
    const id = isRecord(entrypoints) && Object.hasOwn(entrypoints, entrypoint) ? entrypoints[entrypoint] : undefined;
    if (typeof id !== 'number') {
      const available = isRecord(entrypoints) ? Object.keys(entrypoints).join(', ') || 'none' : 'none';
      throw new PolicyLoadError(
        'POLICY_ENTRYPOINT_MISSING',
        `the policy has no entrypoint ${entrypoint} (it has: ${available}); build it with opa build -t wasm -e ${entrypoint}`,
      );
    }
    try {
      instance.setData(bundle.data);
    } catch (error) {
      throw new PolicyLoadError('POLICY_DATA_INVALID', `the policy data could not be loaded: ${describe(error)}`, { cause: error });
    }
    return new PolicyEngine(bundle, module, instance, id, entrypoint, memory);
  }

  /** See {@link policyVersion}: SHA-256 of the module, or of the module and its data together. */
  get version(): string {
    return this.bundle.version;
  }

  /** A copy of the data document the policy runs with (`data` in Rego). */
  get data(): Record<string, unknown> {
    return structuredClone(this.bundle.data);
  }

  /** The compiled module (to run the same policy elsewhere, e.g. on a worker: see {@link probePolicy}). */
  get wasm(): Uint8Array {
    return this.bundle.wasm;
  }

  /** Whether the policy came as a bare `.wasm` or as an `opa build` bundle. */
  get format(): PolicyBundle['format'] {
    return this.bundle.format;
  }

  /**
   * Evaluates the entrypoint on `input` and normalises the result (see
   * {@link normalizeDecision}): an undefined, empty or malformed result is a deny, never an
   * exception. Throws {@link PolicyEvaluationError} only when the policy traps (an OPA
   * runtime error); the error's `decision` is the deny to answer with, and the engine is
   * reset so that the next evaluation starts clean.
   */
  evaluate(input: PolicyInput): Decision {
    let resultSet: unknown;
    try {
      resultSet = this.instance.evaluate(input, this.entrypointId);
    } catch (error) {
      this.reset();
      throw new PolicyEvaluationError(`policy evaluation failed: ${describe(error)}`, denyDecision([EVALUATION_FAILED_REASON]), {
        cause: error,
      });
    }
    return normalizeDecision(resultSet);
  }

  /**
   * The same policy with another data document (`data` in Rego, replaced whole, e.g.
   * `{writ: {config: {...}}}`), for dry runs and tests. Its version covers the new data.
   * Throws {@link PolicyLoadError} when the data is not a JSON object.
   */
  async withData(data: Record<string, unknown>): Promise<PolicyEngine> {
    if (!isRecord(data)) throw new PolicyLoadError('POLICY_DATA_INVALID', 'policy data must be a JSON object');
    let copy: Record<string, unknown>;
    let version: string;
    try {
      copy = JSON.parse(JSON.stringify(data)) as Record<string, unknown>;
      version = policyVersion(this.bundle.wasm, copy);
    } catch (error) {
      throw new PolicyLoadError('POLICY_DATA_INVALID', `policy data must be JSON: ${describe(error)}`, { cause: error });
    }
    const bundle: PolicyBundle = { wasm: this.bundle.wasm, data: copy, version, format: 'bundle' };
    return PolicyEngine.instantiate(bundle, this.module, this.entrypoint, this.memory);
  }

  /** A fresh instance after a trap: the old one's heap may be left inconsistent. */
  private reset(): void {
    try {
      const instance = loadPolicySync(this.module, { ...this.memory });
      instance.setData(this.bundle.data);
      this.instance = instance;
    } catch {
      // Keep the old instance: the next evaluation traps again and is denied again.
    }
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The SDK throws strings as well as errors. */
function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}

/**
 * Evaluates, turning a policy that traps into its fail-closed deny (reported to `onTrap` for
 * the log): the one way token exchange and dry runs ask the policy.
 */
export function evaluateFailClosed(engine: PolicyEngine, input: PolicyInput, onTrap: (error: PolicyEvaluationError) => void): Decision {
  const started = evaluationObservers.length > 0 ? process.hrtime.bigint() : undefined;
  try {
    return engine.evaluate(input);
  } catch (error) {
    if (error instanceof PolicyEvaluationError) {
      onTrap(error);
      return error.decision;
    }
    throw error;
  } finally {
    if (started !== undefined) {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      for (const observe of evaluationObservers) observe(seconds);
    }
  }
}

/**
 * The decision of a worker's answer ({@link probePolicy} with a request): the result set
 * normalised, or, when the policy trapped there, the fail-closed deny {@link evaluateFailClosed}
 * answers (`onTrap` gets the worker's message, for the log).
 */
export function decisionOfProbe(answer: PolicyProbeAnswer, onTrap: (message: string) => void): Decision {
  if ('resultSet' in answer) return normalizeDecision(answer.resultSet);
  onTrap(answer.failed);
  return denyDecision([EVALUATION_FAILED_REASON]);
}

const evaluationObservers: Array<(seconds: number) => void> = [];

/** Tells `observe` the duration of every {@link evaluateFailClosed} (metrics); returns a way to stop. */
export function observePolicyEvaluations(observe: (seconds: number) => void): () => void {
  evaluationObservers.push(observe);
  return () => {
    const index = evaluationObservers.indexOf(observe);
    if (index >= 0) evaluationObservers.splice(index, 1);
  };
}
