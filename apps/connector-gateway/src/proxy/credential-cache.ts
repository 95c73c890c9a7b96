import { Injectable } from '@nestjs/common';
import { CredentialState, GrantStateRepository } from '@writ/grants';
import { ConnectorCache } from '../catalogue/connector-cache';

/** What never changes about an issued credential once it is issued (its task's user is set at most once). */
interface CredentialFacts {
  jti: string;
  taskId: string | null;
  budgetEntries: number[] | null;
  /** The task's declared limits (its tagged `allowed`, which never changes). */
  declaredBudgets: CredentialState['declaredBudgets'];
  /** The task's declared actions on the connector (its tagged `allowed`, which never changes). */
  declaredActions: CredentialState['declaredActions'];
  maxUses: number | null;
  taskUser: CredentialState['taskUser'];
  connectorId: string;
  expiresAtMs: number;
  taskExpiresAtMs: number | null;
}

/** Most credentials remembered; the oldest are forgotten first. */
const MAX_CREDENTIALS = 10_000;

/**
 * The state a gateway call is checked with. A credential seen good before is assembled from
 * memory: its immutable facts (task, budgets, use limit, expiry, user) and its connector from
 * {@link ConnectorCache}; otherwise it is read from PostgreSQL, and remembered if good.
 *
 * Nothing that can change is taken from memory: revocation, the task's status and the uses
 * spent are not read at all for a remembered credential, they are checked where the call is
 * spent, in the statement that spends it, under the audit transaction (with the connector
 * version). A remembered state is marked `remembered`: a call refused with it, or whose
 * spending statement finds it no longer good, is checked again on state read now, so its
 * answer and audit event are exactly those of a call that read everything.
 */
@Injectable()
export class CredentialCache {
  private readonly facts = new Map<string, CredentialFacts>();

  constructor(
    private readonly grants: GrantStateRepository,
    private readonly connectors: ConnectorCache,
  ) {}

  /** The credential's state: from memory unless `fresh` or not held, else read now; `undefined` for an unknown `jti`. */
  async state(jti: string, fresh: boolean): Promise<CredentialState | undefined> {
    if (!fresh) {
      const facts = this.facts.get(jti);
      const connector = facts ? this.connectors.get(facts.connectorId) : undefined;
      if (facts && connector) {
        const now = Date.now();
        return {
          jti: facts.jti,
          taskId: facts.taskId,
          budgetEntries: facts.budgetEntries,
          declaredBudgets: facts.declaredBudgets,
          declaredActions: facts.declaredActions,
          revoked: false,
          expired: facts.expiresAtMs <= now,
          uses: 0,
          maxUses: facts.maxUses,
          taskStatus: 'active',
          taskExpired: facts.taskExpiresAtMs === null || facts.taskExpiresAtMs <= now,
          taskUser: facts.taskUser,
          connector,
          expiresAtMs: facts.expiresAtMs,
          taskExpiresAtMs: facts.taskExpiresAtMs,
          remembered: true,
        };
      }
    }
    const mark = this.connectors.mark();
    const state = await this.grants.load(jti);
    if (state?.connector && !state.revoked && !state.expired && state.taskStatus === 'active' && !state.taskExpired) {
      this.connectors.remember(state.connector, mark);
      if (this.connectors.listening) this.rememberFacts(state, state.connector.id);
    }
    return state;
  }

  /** Drops a connector found changed where a call was spent. */
  forgetConnector(id: string): void {
    this.connectors.forget(id);
  }

  private rememberFacts(state: CredentialState, connectorId: string): void {
    if (!this.facts.has(state.jti) && this.facts.size >= MAX_CREDENTIALS) {
      const oldest = this.facts.keys().next();
      if (!oldest.done) this.facts.delete(oldest.value);
    }
    this.facts.set(state.jti, {
      jti: state.jti,
      taskId: state.taskId,
      budgetEntries: state.budgetEntries,
      declaredBudgets: state.declaredBudgets,
      declaredActions: state.declaredActions,
      maxUses: state.maxUses,
      taskUser: state.taskUser,
      connectorId,
      expiresAtMs: state.expiresAtMs,
      taskExpiresAtMs: state.taskExpiresAtMs,
    });
  }
}
