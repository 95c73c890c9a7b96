import { DynamicModule, Inject, Module, OnApplicationShutdown } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import { connectedAccountsProvider, userTokenVerifierProvider, MasterKeyRewrap } from '@writ/accounts';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { createUpstreamDispatcher, UPSTREAM_DISPATCHER } from '@writ/connectors';
import { ConnectFlowController, ConnectLinksController, MyConnectionsController } from './connections/connections.controller';
import { UserSubjects } from './tasks/user-subjects.service';
import { APP_INTERCEPTOR, APP_PIPE } from '@nestjs/core';
import { ActivePolicy } from '@writ/policy';
import { ApprovalStore } from '@writ/grants';
import { FailureThrottle, HealthModule, PolicySync, Runtime, RUNTIME, RuntimeModule, UnreadBodyInterceptor, writValidationPipe } from '@writ/platform';
import { SweeperService } from './background/sweeper.service';
import { ClientAuthenticator } from './client-auth/client-authenticator.service';
import { ClientRegistry } from './client-auth/client-registry.service';
import { DiscoveryController } from './discovery/discovery.controller';
import { DpopProofs } from './dpop/dpop-proofs.service';
import { ExchangeContextRepository } from './exchange/exchange-context.repository';
import { IntrospectionController } from './introspection/introspection.controller';
import { IntrospectionService } from './introspection/introspection.service';
import { TokenLookup } from './introspection/token-lookup.service';
import { JwksController } from './jwks/jwks.controller';
import { RevocationController } from './revocation/revocation.controller';
import { RevocationService } from './revocation/revocation.service';
import { OrchestratorBearerGuard } from './tasks/orchestrator-bearer.guard';
import { TasksController } from './tasks/tasks.controller';
import { TasksService } from './tasks/tasks.service';
import { AccessTokenIssuer } from './token/access-token-issuer.service';
import { GRANT_HANDLERS, GrantHandler } from './token/grant-handler';
import { GrantRegistry } from './token/grant-registry';
import { ClientCredentialsGrant } from './token/grants/client-credentials.grant';
import { TokenExchangeGrant } from './token/grants/token-exchange.grant';
import { TokenController } from './token/token.controller';
import { TokenService } from './token/token.service';
import { OAuthFailureGate } from './client-auth/oauth-failure-gate.service';

/** The grant handlers, one file each, registered by `grant_type`. */
const GRANTS = [ClientCredentialsGrant, TokenExchangeGrant];

/** The authorization server: discovery, JWKS, token, introspection, revocation, Tasks API. */
@Module({})
export class AuthorizationServerModule implements OnApplicationShutdown {
  constructor(@Inject(UPSTREAM_DISPATCHER) private readonly dispatcher: Dispatcher) {}

  /** Closes the connection pools to identity providers and connected-account upstreams. */
  async onApplicationShutdown(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }

  /** The module over a runtime and the active policy. */
  static forRoot(runtime: Runtime, policy: ActivePolicy): DynamicModule {
    return {
      module: AuthorizationServerModule,
      imports: [RuntimeModule.forRoot(runtime), HealthModule],
      controllers: [
        DiscoveryController,
        JwksController,
        TokenController,
        IntrospectionController,
        RevocationController,
        TasksController,
        ConnectLinksController,
        ConnectFlowController,
        MyConnectionsController,
      ],
      providers: [
        { provide: ActivePolicy, useValue: policy },
        { provide: APP_PIPE, useFactory: writValidationPipe },
        { provide: APP_INTERCEPTOR, useClass: UnreadBodyInterceptor },
        ...GRANTS,
        { provide: GRANT_HANDLERS, useFactory: (...grants: GrantHandler[]) => grants, inject: GRANTS },
        GrantRegistry,
        TokenService,
        AccessTokenIssuer,
        ClientRegistry,
        ClientAuthenticator,
        FailureThrottle,
        OAuthFailureGate,
        ExchangeContextRepository,
        TokenLookup,
        IntrospectionService,
        RevocationService,
        TasksService,
        OrchestratorBearerGuard,
        SweeperService,
        PolicySync,
        DpopProofs,
        // Identity providers' JWKS and connected-account upstreams go through the gateway's destination checks.
        { provide: UPSTREAM_DISPATCHER, useFactory: (config: WritConfig) => createUpstreamDispatcher(config), inject: [WRIT_CONFIG] },
        connectedAccountsProvider(UPSTREAM_DISPATCHER),
        MasterKeyRewrap,
        userTokenVerifierProvider(UPSTREAM_DISPATCHER),
        UserSubjects,
        { provide: ApprovalStore, useFactory: (runtime: Runtime) => new ApprovalStore(runtime.pool, runtime.audit, runtime.rowIntegrity), inject: [RUNTIME] },
      ],
    };
  }
}
