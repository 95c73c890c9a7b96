import { DynamicModule, Inject, Module, OnApplicationShutdown } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import { connectedAccountsProvider, MasterKeyRewrap } from '@writ/accounts';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { createUpstreamDispatcher, UPSTREAM_DISPATCHER } from '@writ/connectors';
import { AdminConnectionsController, IdentityProvidersController } from './connections/connections.controller';
import { ConnectionsService } from './connections/connections.service';
import { APP_INTERCEPTOR, APP_PIPE } from '@nestjs/core';
import { ActivePolicy } from '@writ/policy';
import { FailureThrottle, HealthModule, PolicySync, Runtime, RuntimeModule, UnreadBodyInterceptor, writValidationPipe } from '@writ/platform';
import { AdminTokensController } from './admin-tokens/admin-tokens.controller';
import { AdminTokensService } from './admin-tokens/admin-tokens.service';
import { AgentsController } from './agents/agents.controller';
import { AgentsService } from './agents/agents.service';
import { ApprovalWebhookService } from './approvals/approval-webhook.service';
import { ApprovalsController } from './approvals/approvals.controller';
import { ApprovalsService } from './approvals/approvals.service';
import { AuditLogService } from './audit/audit-log.service';
import { AuditController } from './audit/audit.controller';
import { AdminIdempotency } from './common/idempotency';
import { AdminAuthErrorFilter } from './auth/admin-auth.filter';
import { AdminTokenGuard } from './auth/admin-token.guard';
import { AdminAuthenticator } from './auth/admin-authenticator';
import { ConnectorsController } from './connectors/connectors.controller';
import { ConnectorsService } from './connectors/connectors.service';
import { KeysController } from './keys/keys.controller';
import { KeysService } from './keys/keys.service';
import { OrchestratorsController } from './orchestrators/orchestrators.controller';
import { OrchestratorsService } from './orchestrators/orchestrators.service';
import { PolicyDistributionController } from './policies/policy-distribution.controller';
import { PolicyDistributionService } from './policies/policy-distribution.service';
import { PoliciesController } from './policies/policies.controller';
import { PoliciesService } from './policies/policies.service';
import { PolicyFactsReader } from './policies/policy-facts.reader';
import { AdminTasksController } from './tasks/tasks.controller';
import { AdminTasksService } from './tasks/tasks.service';

/** The admin API: identities, connectors, tasks, audit, policies, keys and admin tokens. */
@Module({})
export class AdminModule implements OnApplicationShutdown {
  constructor(@Inject(UPSTREAM_DISPATCHER) private readonly dispatcher: Dispatcher) {}

  /** Closes the connection pools to connected-account upstreams (revocation on disconnect). */
  async onApplicationShutdown(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }

  /** The module over a runtime and the active policy. */
  static forRoot(runtime: Runtime, policy: ActivePolicy): DynamicModule {
    return {
      module: AdminModule,
      imports: [RuntimeModule.forRoot(runtime), HealthModule],
      controllers: [
        AgentsController,
        OrchestratorsController,
        ConnectorsController,
        AdminTasksController,
        AuditController,
        PoliciesController,
        KeysController,
        AdminTokensController,
        ApprovalsController,
        PolicyDistributionController,
        IdentityProvidersController,
        AdminConnectionsController,
      ],
      providers: [
        { provide: ActivePolicy, useValue: policy },
        { provide: APP_PIPE, useFactory: writValidationPipe },
        { provide: APP_INTERCEPTOR, useClass: UnreadBodyInterceptor },
        AdminTokenGuard,
        AdminAuthenticator,
        AdminIdempotency,
        FailureThrottle,
        AdminAuthErrorFilter,
        AgentsService,
        OrchestratorsService,
        ConnectorsService,
        AdminTasksService,
        AuditLogService,
        PolicyFactsReader,
        PoliciesService,
        KeysService,
        AdminTokensService,
        ApprovalsService,
        ApprovalWebhookService,
        PolicySync,
        PolicyDistributionService,
        { provide: UPSTREAM_DISPATCHER, useFactory: (config: WritConfig) => createUpstreamDispatcher(config), inject: [WRIT_CONFIG] },
        connectedAccountsProvider(UPSTREAM_DISPATCHER),
        MasterKeyRewrap,
        ConnectionsService,
      ],
    };
  }
}
