import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { defaultPolicyPath } from './default-policy';
import { readPolicyFile } from './policy-bundle';
import { PolicyEngine, type PolicyEngineOptions } from './policy-engine';
import { PolicyLoadError } from './policy-errors';
import { POLICY_PROBE_TIMEOUT_MS, probePolicy } from './policy-probe';

/** What a reload did: the new version, or why the previous policy stays. */
export type PolicyReloadEvent =
  { ok: true; path: string; version: string; previousVersion: string } | { ok: false; path: string; error: PolicyLoadError; keptVersion: string };

/** How {@link ActivePolicy} loads and watches. */
export interface ActivePolicyOptions extends PolicyEngineOptions {
  /** Told after every reload attempt made by {@link ActivePolicy.watch}. */
  onReload?: (event: PolicyReloadEvent) => void;
  /** How often {@link ActivePolicy.watch} looks at the file. Default 1000 ms. */
  pollIntervalMs?: number;
}

/**
 * The policy a service currently enforces: the file named by `WRIT_POLICY` or the committed
 * default bundle, reloaded when the file changes. A reload that fails keeps the previous
 * policy (and reports it); the first load failing is fatal to the caller. Framework-free:
 * a NestJS module provides it with `useFactory: () => ActivePolicy.load(config.policyPath)`.
 */
export class ActivePolicy {
  private engine: PolicyEngine;
  private reloading: Promise<PolicyEngine> | undefined;
  /** The reload that runs once more after the one in flight, shared by every call made meanwhile. */
  private reloadingAgain: Promise<PolicyEngine> | undefined;
  private watching = false;
  private loadedAt = new Date();
  private loadedBy = 'startup';
  private installedSource: string | undefined;
  /** How many engines {@link install} made current: a reload tells whether one was installed meanwhile. */
  private installs = 0;

  private constructor(
    /** The absolute path of the policy file. */
    readonly path: string,
    engine: PolicyEngine,
    private readonly options: ActivePolicyOptions,
  ) {
    this.engine = engine;
  }

  /**
   * Loads the policy at `path` (default: the committed bundle), once a worker has seen it answer
   * the sample request in time, as a reload does. Throws {@link PolicyLoadError}.
   */
  static async load(path: string | undefined, options: ActivePolicyOptions = {}): Promise<ActivePolicy> {
    const file = path ?? defaultPolicyPath();
    const engine = await loadProbed(file, options);
    return new ActivePolicy(file, engine, options);
  }

  /** The engine to evaluate with now. Take it once per request, so one request sees one version. */
  current(): PolicyEngine {
    return this.engine;
  }

  /** What is in force, for `GET /v1/policies` and start-up logs. */
  describe(): { version: string; source: string; loaded_at: string; loaded_by: string } {
    return { version: this.engine.version, source: this.installedSource ?? this.path, loaded_at: this.loadedAt.toISOString(), loaded_by: this.loadedBy };
  }

  /**
   * Makes an already loaded engine current (a bundle or data distributed through the
   * database, or a test's variant), recording who installed it.
   */
  install(engine: PolicyEngine, loadedBy: string, source?: string): void {
    this.engine = engine;
    this.installs += 1;
    this.loadedAt = new Date();
    this.loadedBy = loadedBy;
    this.installedSource = source;
  }

  /** True while the policy in force came from somewhere else than the file (e.g. the database). */
  get installedFromElsewhere(): boolean {
    return this.installedSource !== undefined;
  }

  /**
   * Reads and loads the file again and makes it current, once a worker has seen it load and answer
   * the sample request in time ({@link probePolicy}). On failure the previous policy
   * stays current and the {@link PolicyLoadError} is thrown (`POLICY_TOO_SLOW` for a policy that
   * does not answer). A policy installed from elsewhere while the file was loading stays current
   * (and is returned). A call made while a reload is in
   * flight (which may have read the file before the change this call is for) runs one more
   * reload after it, shared by every call made meanwhile: the engine returned was read after
   * the call, so a change is never lost behind a slow load.
   */
  reload(): Promise<PolicyEngine> {
    if (this.reloading) {
      this.reloadingAgain ??= this.reloading
        .catch(() => undefined)
        .then(() => {
          this.reloadingAgain = undefined;
          return this.reload();
        });
      return this.reloadingAgain;
    }
    this.reloading = (async () => {
      const installs = this.installs;
      try {
        const engine = await loadProbed(this.path, this.options);
        // The cluster's stored policy, installed while the file was loading, wins over it (as
        // when the file changes while it is in force): the file is read again on its deactivation.
        if (this.installs !== installs && this.installedFromElsewhere) return this.engine;
        this.install(engine, 'file change');
        return engine;
      } finally {
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }

  /**
   * Reloads whenever the file's size or modification time changes (polling, so that an
   * editor's or a deploy's replace-by-rename is seen too), except while a policy installed from
   * elsewhere is in force. Returns the function that stops.
   */
  watch(): () => void {
    if (this.watching) return () => this.unwatch();
    this.watching = true;
    watchFile(this.path, { interval: this.options.pollIntervalMs ?? 1000, persistent: false }, this.onChange);
    return () => this.unwatch();
  }

  /** Stops watching. */
  unwatch(): void {
    if (!this.watching) return;
    this.watching = false;
    unwatchFile(this.path, this.onChange);
  }

  private readonly onChange = (current: Stats, previous: Stats): void => {
    if (current.mtimeMs === previous.mtimeMs && current.size === previous.size) return;
    // A policy installed from elsewhere (the cluster's stored policy) wins over the file: the
    // file is read again when that policy is deactivated (the caller's explicit reload).
    if (this.installedFromElsewhere) return;
    const previousVersion = this.engine.version;
    this.reload().then(
      (engine) => this.options.onReload?.({ ok: true, path: this.path, version: engine.version, previousVersion }),
      (error: unknown) => {
        const failure = error instanceof PolicyLoadError ? error : new PolicyLoadError('POLICY_FORMAT_INVALID', String(error), { cause: error });
        this.options.onReload?.({ ok: false, path: this.path, error: failure, keptVersion: this.engine.version });
      },
    );
  };
}

/**
 * Reads and loads a policy file that is to run on this event loop, which OPA's WebAssembly cannot
 * interrupt: first on a worker, as an upload is ({@link probePolicy}), so that a policy that spins
 * on the sample request is refused (`POLICY_TOO_SLOW`) instead of stopping the instance.
 */
async function loadProbed(path: string, options: ActivePolicyOptions): Promise<PolicyEngine> {
  const bundle = await readPolicyFile(path, options);
  await probePolicy(bundle.wasm, bundle.data, POLICY_PROBE_TIMEOUT_MS, options.entrypoint);
  return PolicyEngine.load(bundle, options);
}
