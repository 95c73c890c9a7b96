import { DynamicModule, Global, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { Pool } from 'pg';
import { DataSource } from 'typeorm';
import { ENTITIES } from './entities';

/** Injection token of the raw node-postgres pool. */
export const PG_POOL = Symbol('PG_POOL');

/** Shares one initialised data source and the services' pool with every module of an app. */
@Global()
@Module({})
export class DatabaseModule {
  /** Registers an already initialised and migrated data source, and the pool the services' SQL runs on (`PG_POOL`). */
  static forRoot(dataSource: DataSource, pool: Pool): DynamicModule {
    const typeorm = TypeOrmModule.forRootAsync({
      useFactory: () => ({ type: 'postgres', entities: ENTITIES }),
      dataSourceFactory: async () => dataSource,
    });
    return {
      module: DatabaseModule,
      imports: [typeorm, TypeOrmModule.forFeature(ENTITIES)],
      providers: [{ provide: PG_POOL, useValue: pool }],
      exports: [TypeOrmModule, PG_POOL],
    };
  }
}
