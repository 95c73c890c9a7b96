import { DynamicModule, Global, Module } from '@nestjs/common';
import { WritConfig } from './writ-config';

/** Injection token of the validated {@link WritConfig}. */
export const WRIT_CONFIG = Symbol('WRIT_CONFIG');

/** Provides the configuration validated at start to every module. */
@Global()
@Module({})
export class ConfigModule {
  /** Registers an already validated configuration. */
  static forRoot(config: WritConfig): DynamicModule {
    return { module: ConfigModule, providers: [{ provide: WRIT_CONFIG, useValue: config }], exports: [WRIT_CONFIG] };
  }
}
