import { DynamicModule, Inject, Module, OnApplicationShutdown } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { ConnectedAccounts, connectedAccountsProvider, MasterKeyRewrap } from '@writ/accounts';
import { FailureThrottle, HealthModule, RUNTIME, Runtime, RuntimeModule } from '@writ/platform';
import { CatalogueCache } from './catalogue/catalogue-cache';
import { ConnectorCache } from './catalogue/connector-cache';
import { ProtectedResourceController } from './mcp/protected-resource.controller';
import { McpSessionRepository } from './mcp/mcp-session.repository';
import { GrantStateRepository } from '@writ/grants';
import { ProxyController } from './proxy/proxy.controller';
import { CredentialCache } from './proxy/credential-cache';
import { ProxyService } from './proxy/proxy.service';
import { CredentialBinding } from './upstream/credential-binding.service';
import { UpstreamCredentials } from './upstream/upstream-credentials.service';
import { createUpstreamDispatcher, UPSTREAM_DISPATCHER } from './upstream/upstream-dispatcher';

/** The connector gateway: checks each call against its grant, injects the upstream credential, forwards. */
@Module({})
export class ConnectorGatewayModule implements OnApplicationShutdown {
  constructor(@Inject(UPSTREAM_DISPATCHER) private readonly dispatcher: Dispatcher) {}

  /** The module over a runtime. */
  static forRoot(runtime: Runtime): DynamicModule {
    return {
      module: ConnectorGatewayModule,
      imports: [RuntimeModule.forRoot(runtime), HealthModule],
      controllers: [ProtectedResourceController, ProxyController],
      providers: [
        { provide: UPSTREAM_DISPATCHER, useFactory: (config: WritConfig) => createUpstreamDispatcher(config), inject: [WRIT_CONFIG] },
        CatalogueCache,
        ConnectorCache,
        GrantStateRepository,
        CredentialCache,
        McpSessionRepository,
        {
          provide: UpstreamCredentials,
          useFactory: (runtime: Runtime, dispatcher: Dispatcher, accounts: ConnectedAccounts) =>
            new UpstreamCredentials(
              runtime.masterKey,
              dispatcher,
              accounts,
              (connectorId, reason) => runtime.metrics?.upstreamTokenDeferred(connectorId, reason),
              (connectorId) => runtime.metrics?.accountRefreshDeferred(connectorId),
              (connectorId, reason) => runtime.metrics?.accountTokenUnrefreshed(connectorId, reason),
            ),
          inject: [RUNTIME, UPSTREAM_DISPATCHER, ConnectedAccounts],
        },
        connectedAccountsProvider(UPSTREAM_DISPATCHER),
        MasterKeyRewrap,
        CredentialBinding,
        ProxyService,
        FailureThrottle,
      ],
    };
  }

  /** Closes the upstream connection pools. */
  async onApplicationShutdown(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }
}
