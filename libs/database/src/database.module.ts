import { DynamicModule, Global, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { ENTITIES } from './entities';
import { poolOf } from './data-source';

/** Injection token of the raw node-postgres pool. */
export const PG_POOL = Symbol('PG_POOL');

/** Shares one initialised data source (and its pool) with every module of an app. */
@Global()
@Module({})
export class DatabaseModule {
  /** Registers an already initialised and migrated data source. */
  static forRoot(dataSource: DataSource): DynamicModule {
    const typeorm = TypeOrmModule.forRootAsync({
      useFactory: () => ({ type: 'postgres', entities: ENTITIES }),
      dataSourceFactory: async () => dataSource,
    });
    return {
      module: DatabaseModule,
      imports: [typeorm, TypeOrmModule.forFeature(ENTITIES)],
      providers: [{ provide: PG_POOL, useValue: poolOf(dataSource) }],
      exports: [TypeOrmModule, PG_POOL],
    };
  }
}
