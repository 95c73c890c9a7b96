export * from './access-token.entity';
export * from './admin-token.entity';
export * from './approval.entity';
export * from './agent.entity';
export * from './connector.entity';
export * from './json-web-key-set';
export * from './orchestrator.entity';
export * from './policy.entity';
export * from './signing-key.entity';
export * from './task.entity';
export * from './row-of';
import { AccessTokenEntity } from './access-token.entity';
import { AdminTokenEntity } from './admin-token.entity';
import { ApprovalEntity } from './approval.entity';
import { AgentEntity } from './agent.entity';
import { ConnectorEntity } from './connector.entity';
import { OrchestratorEntity } from './orchestrator.entity';
import { PolicyEntity } from './policy.entity';
import { SigningKeyEntity } from './signing-key.entity';
import { TaskEntity } from './task.entity';

/** Every TypeORM entity of Writ. */
export const ENTITIES = [
  AccessTokenEntity,
  AdminTokenEntity,
  ApprovalEntity,
  AgentEntity,
  ConnectorEntity,
  OrchestratorEntity,
  PolicyEntity,
  SigningKeyEntity,
  TaskEntity,
];
