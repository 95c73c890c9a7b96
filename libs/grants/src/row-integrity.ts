import { createHash } from 'node:crypto';
// The audit chain's RFC 8785 writer: one definition of canonical JSON (jsonb members in any order, one text).
import { canonicalJsonText } from '@writ/audit';
import type { MasterKey } from '@writ/keys';

/**
 * Integrity tags of the rows that grant authority: a task (what its agent may be given), an agent
 * or an orchestrator (the keys a client authenticates with, its status, whom it may declare
 * tasks for), an admin token (its role), a connector (its catalogue: which upstream call a
 * granted action matches, and with which credential type), a trusted identity provider (whose
 * users' tokens Writ accepts), the active stored policy (what every grant is evaluated with) and an
 * approval's decision (what a human allowed). Each is `MasterKey.rowMac` over a canonical text of the row's authority-bearing
 * columns, written by Writ with the row and verified where the row is used to grant: a row a
 * database administrator inserted or changed by hand (no master key) does not verify, and is
 * refused as if it did not exist. A tag proves that Writ wrote these contents for this row at
 * some time, not that they are the latest: a row set back to an earlier state Writ wrote, tag
 * included, verifies (see docs/security.md).
 */

/** The tables whose rows carry a tag (the `kind` bound into the MAC). */
export type TaggedTable = 'tasks' | 'agents' | 'orchestrators' | 'admin_tokens' | 'connectors' | 'identity_providers' | 'policies' | 'approvals';

/** The columns of a task its tag covers: everything that decides what the task may get. */
export interface TaskIntegrityFields {
  id: string;
  agentId: string;
  orchestratorId: string;
  purpose: string;
  /** The declared `allowed` entries, with their `limits` (jsonb). */
  allowed: unknown;
  onBehalfOf: string | null;
  userIssuer: string | null;
  userSubject: string | null;
  /** The policy sees it (jsonb). */
  metadata: unknown;
  taskTokenJti: string;
  createdAt: Date;
  expiresAt: Date;
}

/** A `tasks` row with the columns its tag covers, as `pg` reads them, and its tag. */
export interface TaskIntegrityRow {
  id: string;
  agent_id: string;
  orchestrator_id: string;
  purpose: string;
  allowed: unknown;
  on_behalf_of: string | null;
  user_issuer: string | null;
  user_subject: string | null;
  metadata: unknown;
  task_token_jti: string;
  created_at: Date;
  expires_at: Date;
  integrity_tag: string | null;
}

/** The columns of {@link TaskIntegrityRow} but its tag, for a `SELECT`. */
export const TASK_INTEGRITY_COLUMNS =
  'id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, user_issuer, user_subject, metadata, task_token_jti, created_at, expires_at';

/** The tagged fields of a task row as read. */
export function taskIntegrityFieldsOf(row: Omit<TaskIntegrityRow, 'integrity_tag'>): TaskIntegrityFields {
  return {
    id: row.id,
    agentId: row.agent_id,
    orchestratorId: row.orchestrator_id,
    purpose: row.purpose,
    allowed: row.allowed,
    onBehalfOf: row.on_behalf_of,
    userIssuer: row.user_issuer,
    userSubject: row.user_subject,
    metadata: row.metadata,
    taskTokenJti: row.task_token_jti,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}

/** The columns of an agent or orchestrator its tag covers (not its name or description: display only). */
export interface ClientIntegrityFields {
  id: string;
  status: string;
  /** The public keys its assertions verify with (jsonb). */
  jwks: unknown;
  /** Orchestrators only: the agents it may declare tasks for. */
  allowedAgents?: readonly string[];
}

/** The columns of an admin token its tag covers (not its name, its use or its revocation, which only narrows). */
export interface AdminTokenIntegrityFields {
  id: string;
  role: string;
  /** The SHA-256 of the token, as stored. */
  tokenHash: string;
  expiresAt: Date | null;
}

/**
 * The columns of a connector its tag covers: what decides which upstream call a granted action
 * matches and with which credential (not its name, nor the sealed credential, its fingerprint,
 * `version` or timestamps: the sealed credential is bound to the id and `base_url` by its own
 * AES-GCM associated data, and changes through the master key's re-seal and the gateway's binding).
 */
export interface ConnectorIntegrityFields {
  id: string;
  kind: string;
  baseUrl: string;
  /** The catalogue (jsonb): each operation's method, path, risk and constraints. */
  operations: unknown;
  credentialType: string | null;
}

/** A `connectors` row with the columns its tag covers, as `pg` reads them (`operations` as jsonb text), and its tag. */
export interface ConnectorIntegrityRow {
  id: string;
  kind: string;
  base_url: string;
  operations_text: string;
  credential_type: string | null;
  integrity_tag: string | null;
}

/** The columns of {@link ConnectorIntegrityRow}, its tag included, for a `SELECT` from `connectors`. */
export const CONNECTOR_INTEGRITY_COLUMNS = 'id, kind, base_url, operations::text AS operations_text, credential_type, integrity_tag';

/** The tagged fields of a connector row read with {@link CONNECTOR_INTEGRITY_COLUMNS} (throws on a catalogue that is not JSON). */
export function connectorIntegrityFieldsOf(row: Omit<ConnectorIntegrityRow, 'integrity_tag'>): ConnectorIntegrityFields {
  return { id: row.id, kind: row.kind, baseUrl: row.base_url, operations: JSON.parse(row.operations_text) as unknown, credentialType: row.credential_type };
}

/**
 * The columns of a trusted identity provider its tag covers: everything that decides whose
 * tokens are accepted as a user's (its issuer, where its keys are fetched, the audience) and which
 * orchestrators may assert its users without a token (not its timestamps).
 */
export interface IdentityProviderIntegrityFields {
  issuer: string;
  jwksUri: string;
  audience: string;
  assertingOrchestrators: readonly string[];
}

/** An `identity_providers` row with the columns its tag covers, as `pg` reads them, and its tag. */
export interface IdentityProviderIntegrityRow {
  issuer: string;
  jwks_uri: string;
  audience: string;
  asserting_orchestrators: string[];
  integrity_tag: string | null;
}

/** The columns of {@link IdentityProviderIntegrityRow}, its tag included, for a `SELECT` from `identity_providers`. */
export const IDENTITY_PROVIDER_INTEGRITY_COLUMNS = 'issuer, jwks_uri, audience, asserting_orchestrators, integrity_tag';

/** The tagged fields of an identity provider row. */
export function identityProviderIntegrityFieldsOf(row: Omit<IdentityProviderIntegrityRow, 'integrity_tag'>): IdentityProviderIntegrityFields {
  return { issuer: row.issuer, jwksUri: row.jwks_uri, audience: row.audience, assertingOrchestrators: row.asserting_orchestrators };
}

/**
 * The columns of a stored policy its tag covers, written when Writ activates it: what the
 * evaluator loads (the bundle, by its SHA-256, and the data override) and the activation (its
 * `loaded_at`, set anew at each activation). Only the active row carries a tag: deactivating one
 * clears it, so a policy made active by hand does not verify.
 */
export interface PolicyIntegrityFields {
  version: string;
  bundle: Uint8Array;
  /** The data override (jsonb), or null. */
  data: unknown;
  loadedAt: Date;
}

/** A `policies` row with the columns its tag covers, as `pg` reads them, and its tag. */
export interface PolicyIntegrityRow {
  version: string;
  bundle: Buffer;
  data: Record<string, unknown> | null;
  loaded_at: Date;
  integrity_tag: string | null;
}

/** The columns of {@link PolicyIntegrityRow}, its tag included, for a `SELECT` from `policies`. */
export const POLICY_INTEGRITY_COLUMNS = 'version, bundle, data, loaded_at, integrity_tag';

/** The tagged fields of a policy row. */
export function policyIntegrityFieldsOf(row: Omit<PolicyIntegrityRow, 'integrity_tag'>): PolicyIntegrityFields {
  return { version: row.version, bundle: row.bundle, data: row.data, loadedAt: row.loaded_at };
}

/**
 * The columns of a decided approval its tag covers, written with the decision: what was asked
 * (task, agent, connector, details, policy version, deadline, the DPoP key asked with) and what
 * was decided (status, when, by whom). Not the note (display only) nor `used_at`: a used
 * approval buys nothing more.
 */
export interface ApprovalIntegrityFields {
  id: string;
  taskId: string;
  agentId: string;
  connectorId: string;
  authorizationDetails: unknown;
  policyVersion: string;
  /** `approved` or `denied`, as decided. */
  status: string;
  expiresAt: Date;
  decidedAt: Date | null;
  decidedBy: string | null;
  /** The DPoP key thumbprint asked with; null (none) leaves the text as it was before the column. */
  dpopJkt: string | null;
}

/** An `approvals` row with the columns its tag covers, as `pg` reads them, and its tag. */
export interface ApprovalIntegrityRow {
  id: string;
  task_id: string;
  agent_id: string;
  connector_id: string;
  authorization_details: unknown;
  policy_version: string;
  status: string;
  expires_at: Date;
  decided_at: Date | null;
  decided_by: string | null;
  dpop_jkt: string | null;
  integrity_tag: string | null;
}

/** The columns of {@link ApprovalIntegrityRow}, its tag included, for a `SELECT` from `approvals`. */
export const APPROVAL_INTEGRITY_COLUMNS =
  'id, task_id, agent_id, connector_id, authorization_details, policy_version, status, expires_at, decided_at, decided_by, dpop_jkt, integrity_tag';

/** The tagged fields of an approval row (`status` as it stands: a consumed one is verified as `approved`). */
export function approvalIntegrityFieldsOf(row: Omit<ApprovalIntegrityRow, 'integrity_tag'>): ApprovalIntegrityFields {
  return {
    id: row.id,
    taskId: row.task_id,
    agentId: row.agent_id,
    connectorId: row.connector_id,
    authorizationDetails: row.authorization_details,
    policyVersion: row.policy_version,
    status: row.status,
    expiresAt: row.expires_at,
    decidedAt: row.decided_at,
    decidedBy: row.decided_by,
    dpopJkt: row.dpop_jkt ?? null,
  };
}

/** Milliseconds since the epoch of a timestamp (`pg` reads `timestamptz` to the millisecond). */
function epochMillis(at: Date): number {
  const ms = at.getTime();
  if (!Number.isFinite(ms)) throw new TypeError('row integrity: invalid timestamp');
  return ms;
}

/**
 * The canonical text of a task's tagged columns: a JSON array, one position per column in a
 * fixed order (so no value can pass for another column's), jsonb values canonical, timestamps in
 * epoch milliseconds, the id lower-case (as `uuid` prints it).
 */
export function taskIntegrityText(task: TaskIntegrityFields): string {
  return canonicalJsonText([
    task.id.toLowerCase(),
    task.agentId,
    task.orchestratorId,
    task.purpose,
    task.allowed,
    task.onBehalfOf,
    task.userIssuer,
    task.userSubject,
    task.metadata,
    task.taskTokenJti,
    epochMillis(task.createdAt),
    epochMillis(task.expiresAt),
  ]);
}

/** The canonical text of a client's tagged columns (an orchestrator's with its allowed agents, in their stored order). */
export function clientIntegrityText(table: 'agents' | 'orchestrators', client: ClientIntegrityFields): string {
  const fields: unknown[] = [client.id, client.status, client.jwks];
  if (table === 'orchestrators') fields.push([...(client.allowedAgents ?? [])]);
  return canonicalJsonText(fields);
}

/** The canonical text of an admin token's tagged columns. */
export function adminTokenIntegrityText(token: AdminTokenIntegrityFields): string {
  return canonicalJsonText([token.id.toLowerCase(), token.role, token.tokenHash, token.expiresAt === null ? null : epochMillis(token.expiresAt)]);
}

/** The canonical text of a connector's tagged columns. */
export function connectorIntegrityText(connector: ConnectorIntegrityFields): string {
  return canonicalJsonText([connector.id, connector.kind, connector.baseUrl, connector.operations, connector.credentialType]);
}

/** The canonical text of an identity provider's tagged columns (its asserting orchestrators in their stored order). */
export function identityProviderIntegrityText(provider: IdentityProviderIntegrityFields): string {
  return canonicalJsonText([provider.issuer, provider.jwksUri, provider.audience, [...provider.assertingOrchestrators]]);
}

/** The canonical text of a policy's tagged columns (the bundle by its SHA-256, in hex). */
export function policyIntegrityText(policy: PolicyIntegrityFields): string {
  return canonicalJsonText([policy.version, createHash('sha256').update(policy.bundle).digest('hex'), policy.data ?? null, epochMillis(policy.loadedAt)]);
}

/** The canonical text of an approval's tagged columns. */
export function approvalIntegrityText(approval: ApprovalIntegrityFields): string {
  return canonicalJsonText([
    approval.id.toLowerCase(),
    approval.taskId.toLowerCase(),
    approval.agentId,
    approval.connectorId,
    approval.authorizationDetails,
    approval.policyVersion,
    approval.status,
    epochMillis(approval.expiresAt),
    approval.decidedAt === null ? null : epochMillis(approval.decidedAt),
    approval.decidedBy,
    // Appended only when there is a key: tags of approvals asked without one verify as written.
    ...(approval.dpopJkt === null ? [] : [approval.dpopJkt]),
  ]);
}

/** Where a refused row is reported (the table and the id: never a column's value). */
export type RowRefusalLog = (table: TaggedTable, id: string) => void;

/**
 * Computes and verifies the integrity tags of tasks, agents, orchestrators, admin tokens, connectors, identity
 * providers, active policies and approval decisions under the master
 * key. A row whose tag does not verify (absent, altered, copied from another row, made under
 * no configured key) is reported through `onRefused` (logged at error level by the runtime).
 */
export class RowIntegrity {
  constructor(
    private readonly masterKey: MasterKey,
    private readonly onRefused: RowRefusalLog = () => undefined,
  ) {}

  /** The tag of a task row as it is written. */
  tagTask(task: TaskIntegrityFields): string {
    return this.masterKey.rowMac('tasks', taskIntegrityText(task));
  }

  /** The tag of an agent or orchestrator row as it is written. */
  tagClient(table: 'agents' | 'orchestrators', client: ClientIntegrityFields): string {
    return this.masterKey.rowMac(table, clientIntegrityText(table, client));
  }

  /** The tag of an admin token row as it is written. */
  tagAdminToken(token: AdminTokenIntegrityFields): string {
    return this.masterKey.rowMac('admin_tokens', adminTokenIntegrityText(token));
  }

  /** The tag of a connector row as it is written. */
  tagConnector(connector: ConnectorIntegrityFields): string {
    return this.masterKey.rowMac('connectors', connectorIntegrityText(connector));
  }

  /** Whether a connector row read back is one Writ wrote (reported when not). */
  verifyConnector(connector: ConnectorIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified('connectors', connector.id, () => connectorIntegrityText(connector), tag);
  }

  /**
   * Whether a connector row read with {@link CONNECTOR_INTEGRITY_COLUMNS}-like columns is one Writ
   * wrote: its catalogue is parsed here, so that text that is not JSON is refused like a bad tag.
   */
  verifyConnectorRow(row: ConnectorIntegrityRow): boolean {
    return this.verified('connectors', row.id, () => connectorIntegrityText(connectorIntegrityFieldsOf(row)), row.integrity_tag);
  }

  /** Whether an admin token row read back is one Writ wrote (reported when not). */
  verifyAdminToken(token: AdminTokenIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified('admin_tokens', token.id, () => adminTokenIntegrityText(token), tag);
  }

  /** Whether a task row read back is one Writ wrote (reported when not). */
  verifyTask(task: TaskIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified('tasks', task.id, () => taskIntegrityText(task), tag);
  }

  /** Whether an agent or orchestrator row read back is one Writ wrote (reported when not). */
  verifyClient(table: 'agents' | 'orchestrators', client: ClientIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified(table, client.id, () => clientIntegrityText(table, client), tag);
  }

  /** The tag of an identity provider row as it is written. */
  tagIdentityProvider(provider: IdentityProviderIntegrityFields): string {
    return this.masterKey.rowMac('identity_providers', identityProviderIntegrityText(provider));
  }

  /** Whether an identity provider row read back is one Writ wrote (reported when not). */
  verifyIdentityProvider(provider: IdentityProviderIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified('identity_providers', provider.issuer, () => identityProviderIntegrityText(provider), tag);
  }

  /** The tag of a policy row as Writ activates it. */
  tagPolicy(policy: PolicyIntegrityFields): string {
    return this.masterKey.rowMac('policies', policyIntegrityText(policy));
  }

  /** Whether an active policy row read back is one Writ activated (reported when not). */
  verifyPolicy(policy: PolicyIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified('policies', policy.version, () => policyIntegrityText(policy), tag);
  }

  /** The tag of an approval row as Writ decides it. */
  tagApproval(approval: ApprovalIntegrityFields): string {
    return this.masterKey.rowMac('approvals', approvalIntegrityText(approval));
  }

  /** Whether an approval's decision read back is one Writ wrote (reported when not). */
  verifyApproval(approval: ApprovalIntegrityFields, tag: string | null | undefined): boolean {
    return this.verified('approvals', approval.id, () => approvalIntegrityText(approval), tag);
  }

  /** Whether a tag was made under the current master key (else it is re-made after a rotation). */
  isCurrent(tag: string): boolean {
    return this.masterKey.isCurrentRowMac(tag);
  }

  private verified(table: TaggedTable, id: string, text: () => string, tag: string | null | undefined): boolean {
    let ok = false;
    try {
      ok = this.masterKey.verifyRowMac(table, text(), tag);
    } catch {
      // A value JSON cannot hold was not written by Writ.
      ok = false;
    }
    if (!ok) this.onRefused(table, id);
    return ok;
  }
}
