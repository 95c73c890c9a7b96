import type { PolicyEngine } from './policy-engine';

/**
 * The policy in force in this process. Every decision reads `current()` once, so a swap
 * (hot reload) never mixes two policies in one decision; a failed load never gets here,
 * so the last known good policy stays.
 */
export class ActivePolicy {
  private engine: PolicyEngine;
  private loadedAt = new Date();
  private loadedBy = 'startup';
  private source: string;

  constructor(engine: PolicyEngine, source: string) {
    this.engine = engine;
    this.source = source;
  }

  /** The engine to evaluate with. */
  current(): PolicyEngine {
    return this.engine;
  }

  /** Replaces the engine (already loaded and checked). */
  swap(engine: PolicyEngine, source: string, loadedBy: string): void {
    this.engine = engine;
    this.source = source;
    this.loadedBy = loadedBy;
    this.loadedAt = new Date();
  }

  /** What is in force, for `GET /v1/policies` and readiness. */
  describe(): { version: string; source: string; loaded_at: string; loaded_by: string } {
    return { version: this.engine.version, source: this.source, loaded_at: this.loadedAt.toISOString(), loaded_by: this.loadedBy };
  }
}
