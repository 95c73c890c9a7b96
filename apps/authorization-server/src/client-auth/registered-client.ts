import type { JsonWebKeySet } from '@writ/database';

/** The kinds of OAuth client Writ knows. */
export type ClientKind = 'agent' | 'orchestrator';

/** An authenticated client, as the grants see it. */
export interface RegisteredClient {
  id: string;
  kind: ClientKind;
  name: string;
  status: 'active' | 'suspended';
  jwks: JsonWebKeySet;
  /** Orchestrators only: the agents it may create tasks for (`*` for any). */
  allowedAgents: string[];
  /**
   * The registration's version (moved on by every change of its row): a credential is recorded
   * only if it is still this one (see `connectorCredentials`).
   */
  version: string;
}
