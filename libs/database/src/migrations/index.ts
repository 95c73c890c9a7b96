import { InitialSchema1764340000000 } from './1764340000000-initial-schema';
import { ServiceRole1764350000000 } from './1764350000000-service-role';
import { Approvals1764360000000 } from './1764360000000-approvals';
import { CountGrants1764370000000 } from './1764370000000-count-grants';
import { TaskBudgets1764400000000 } from './1764400000000-task-budgets';
import { AuditCheckpoints1764420000000 } from './1764420000000-audit-checkpoints';
import { FailureThrottle1764430000000 } from './1764430000000-failure-throttle';
import { ApprovalWebhook1764440000000 } from './1764440000000-approval-webhook';
import { SigningKeyNext1764460000000 } from './1764460000000-signing-key-next';
import { ConnectorKind1764470000000 } from './1764470000000-connector-kind';
import { McpSessions1764470000001 } from './1764470000001-mcp-sessions';
import { ConnectedAccounts1764480000000 } from './1764480000000-connected-accounts';
import { AuditPrunes1764500000000 } from './1764500000000-audit-prunes';
import { TaskGrantCounts1764490000000 } from './1764490000000-task-grant-counts';
import { ConnectorVersions1764536000000 } from './1764536000000-connector-versions';
import { ChangeNotifications1764540000000 } from './1764540000000-change-notifications';
import { BatchExpectations1764550000000 } from './1764550000000-batch-expectations';
import { AccountRefreshLease1764560000000 } from './1764560000000-account-refresh-lease';
import { AdminTokenExpiry1764570000000 } from './1764570000000-admin-token-expiry';
import { TaskIdempotencyKeys1764580000000 } from './1764580000000-task-idempotency-keys';
import { RowIntegrity1764590000000 } from './1764590000000-row-integrity';
import { ConnectorIntegrity1764600000000 } from './1764600000000-connector-integrity';
import { AdminIdempotencyKeys1764610000000 } from './1764610000000-admin-idempotency-keys';
import { ListOrderIndexes1764620000000 } from './1764620000000-list-order-indexes';
import { AuthorityIntegrity1764630000000 } from './1764630000000-authority-integrity';
import { AccountForcedRefresh1764640000000 } from './1764640000000-account-forced-refresh';
import { RowIntegrityBackfillProgress1764652000000 } from './1764652000000-row-integrity-backfill-progress';
import { AccountRefreshBackoff1764660000000 } from './1764660000000-account-refresh-backoff';
import { MasterKeyRetagProgress1764670000000 } from './1764670000000-master-key-retag-progress';
import { AdminTokenCreatorIndex1764685000000 } from './1764685000000-admin-token-creator-index';
import { ApprovalDpopKey1764690000000 } from './1764690000000-approval-dpop-key';

export { AUDIT_GENESIS_HASH } from './1764340000000-initial-schema';
export { SERVICE_ROLE } from './1764350000000-service-role';
export { EXPECTATION_FAILED } from './1764550000000-batch-expectations';
export { CLIENT_CHANGED_CHANNEL, CONNECTOR_CHANGED_CHANNEL, POLICY_CHANGED_CHANNEL, SIGNING_KEYS_CHANGED_CHANNEL } from './1764540000000-change-notifications';

/** Every migration, in order. */
export const MIGRATIONS = [
  InitialSchema1764340000000,
  ServiceRole1764350000000,
  Approvals1764360000000,
  CountGrants1764370000000,
  TaskBudgets1764400000000,
  AuditCheckpoints1764420000000,
  FailureThrottle1764430000000,
  ApprovalWebhook1764440000000,
  SigningKeyNext1764460000000,
  ConnectorKind1764470000000,
  McpSessions1764470000001,
  ConnectedAccounts1764480000000,
  TaskGrantCounts1764490000000,
  AuditPrunes1764500000000,
  ConnectorVersions1764536000000,
  ChangeNotifications1764540000000,
  BatchExpectations1764550000000,
  AccountRefreshLease1764560000000,
  AdminTokenExpiry1764570000000,
  TaskIdempotencyKeys1764580000000,
  RowIntegrity1764590000000,
  ConnectorIntegrity1764600000000,
  AdminIdempotencyKeys1764610000000,
  ListOrderIndexes1764620000000,
  AuthorityIntegrity1764630000000,
  AccountForcedRefresh1764640000000,
  RowIntegrityBackfillProgress1764652000000,
  AccountRefreshBackoff1764660000000,
  MasterKeyRetagProgress1764670000000,
  AdminTokenCreatorIndex1764685000000,
  ApprovalDpopKey1764690000000,
];
