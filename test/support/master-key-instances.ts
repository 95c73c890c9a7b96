import { masterKeyRewrapDone } from '@writ/accounts';
import type { TestDatabase } from '@writ/testing';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { startTestServices, TestServices } from './test-services';

/** `WRIT_MASTER_KEY` and `WRIT_MASTER_KEY_PREVIOUS` for a current key and the previous ones. */
export function masterKeyEnv(current: Buffer, previous: Buffer[] = []): Record<string, string> {
  return {
    WRIT_MASTER_KEY: current.toString('base64'),
    ...(previous.length ? { WRIT_MASTER_KEY_PREVIOUS: previous.map((key) => key.toString('base64')).join(',') } : {}),
  };
}

/**
 * Instances (authorization server, gateway, admin API) started and stopped over one database
 * under given master keys, as a rotation's restarts do: each `start` waits for the background
 * re-seal, so that the steps after it see what it did; `closeAll` stops whatever is still open.
 */
export function masterKeyInstances(options: { db: () => TestDatabase; logs: string[]; env?: () => Record<string, string> }) {
  const open: TestServices[] = [];
  return {
    open,
    start: async (current: Buffer, previous: Buffer[] = [], more: Record<string, string> = {}): Promise<TestServices> => {
      const services = await startTestServices({
        db: options.db(),
        gateway: createGatewayApp,
        admin: createAdminApp,
        env: { ...masterKeyEnv(current, previous), ...options.env?.(), ...more },
        logSink: (line) => options.logs.push(line),
      });
      open.push(services);
      await masterKeyRewrapDone(services.runtime);
      return services;
    },
    stop: async (services: TestServices): Promise<void> => {
      open.splice(open.indexOf(services), 1);
      await services.close();
    },
    closeAll: async (): Promise<void> => {
      for (const services of open.splice(0)) await services.close().catch(() => undefined);
    },
  };
}
