import { DynamicModule, Global, Module } from '@nestjs/common';
import { AuditService } from '@writ/audit';
import { ConfigModule } from '@writ/config';
import { CredentialRevoker, GrantStore, RowIntegrity } from '@writ/grants';
import { DatabaseModule } from '@writ/database';
import { MasterKey, SigningKeyStore } from '@writ/keys';
import type { Runtime } from './runtime';

/** Injection token of the process logger (pino). */
export const LOGGER = Symbol('LOGGER');
/** Injection token of the {@link Runtime} itself. */
export const RUNTIME = Symbol('RUNTIME');

/**
 * Hands the pieces of the process runtime (config, database, keys, audit, logger) to Nest's
 * container, each under its own token, so that a service injects exactly what it uses.
 */
@Global()
@Module({})
export class RuntimeModule {
  /** Registers the runtime created before Nest started. */
  static forRoot(runtime: Runtime): DynamicModule {
    return {
      module: RuntimeModule,
      imports: [ConfigModule.forRoot(runtime.config), DatabaseModule.forRoot(runtime.dataSource, runtime.pool)],
      providers: [
        { provide: RUNTIME, useValue: runtime },
        { provide: LOGGER, useValue: runtime.logger },
        { provide: AuditService, useValue: runtime.audit },
        { provide: SigningKeyStore, useValue: runtime.signingKeys },
        { provide: MasterKey, useValue: runtime.masterKey },
        { provide: CredentialRevoker, useValue: runtime.revoker },
        { provide: RowIntegrity, useValue: runtime.rowIntegrity },
        { provide: GrantStore, useValue: new GrantStore(runtime.pool, runtime.rowIntegrity) },
      ],
      exports: [ConfigModule, DatabaseModule, RUNTIME, LOGGER, AuditService, SigningKeyStore, MasterKey, CredentialRevoker, GrantStore, RowIntegrity],
    };
  }
}
