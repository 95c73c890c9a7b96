import type { Logger } from 'pino';
import { ActivePolicy } from '@writ/policy';
import { noteRefusedPolicyReload } from './metrics';
import { StartupError } from './runtime';

/**
 * Loads the policy (`WRIT_POLICY` or the committed default) and reloads it whenever its file
 * changes. A file that does not load, or lacks the entrypoint, is refused and the last known
 * good policy stays in force. No policy at start: the service does not start.
 */
export async function loadWatchedPolicy(path: string | undefined, logger: Logger): Promise<ActivePolicy> {
  let policy: ActivePolicy;
  try {
    policy = await ActivePolicy.load(path, {
      onReload: (event) => {
        if (event.ok) logger.info({ path: event.path, version: event.version, previous: event.previousVersion }, 'policy reloaded');
        else {
          noteRefusedPolicyReload();
          logger.error({ path: event.path, error: event.error.message, kept: event.keptVersion }, 'policy reload refused: keeping the last good policy');
        }
      },
    });
  } catch (error) {
    throw new StartupError(`cannot load the policy: ${error instanceof Error ? error.message : String(error)}`);
  }
  policy.watch();
  return policy;
}
