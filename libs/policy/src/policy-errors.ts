import type { Decision } from './decision';

/** Why a policy could not be loaded. */
export type PolicyLoadErrorCode =
  /** The bytes are neither a WebAssembly module nor a gzip'd tar bundle, or the bundle is malformed. */
  | 'POLICY_FORMAT_INVALID'
  /** The bundle holds no policy.wasm (or none for the entrypoint). */
  | 'POLICY_WASM_MISSING'
  /** The WebAssembly module does not compile or instantiate as an OPA policy. */
  | 'POLICY_WASM_INVALID'
  /** The module does not export the named entrypoint (writ/grant/decision). */
  | 'POLICY_ENTRYPOINT_MISSING'
  /** The bundle's data is not a JSON object. */
  | 'POLICY_DATA_INVALID'
  /** The policy file could not be read. */
  | 'POLICY_FILE_UNREADABLE'
  /** The policy did not load and answer a sample request in time, or exhausted its memory (see `probePolicy`). */
  | 'POLICY_TOO_SLOW';

/** A policy bundle or module was refused at load: the service must not start (or must keep its previous policy). */
export class PolicyLoadError extends Error {
  override readonly name = 'PolicyLoadError';

  constructor(
    readonly code: PolicyLoadErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The policy trapped while evaluating (an OPA runtime error such as a conflict between rule
 * values, a missing built-in, or memory exhausted). Carries the fail-closed deny to answer
 * with: `decision.allow` is false and `decision.reasons` holds a generic reason that is safe
 * to show to the client; the cause (which may describe the policy's internals) is for logs.
 */
export class PolicyEvaluationError extends Error {
  override readonly name = 'PolicyEvaluationError';
  readonly code = 'POLICY_EVALUATION_FAILED';

  constructor(
    message: string,
    readonly decision: Decision,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
