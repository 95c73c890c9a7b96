import { loadConfig, withdrawSecretVariables } from '@writ/config';
import { auditArchive } from './audit-archive-command';

/**
 * `npm run audit:archive -- --before <seq|ISO date> --out <dir> [--actor NAME]`: prints what
 * was archived and pruned. Exits 0 when done (or nothing to prune), 2 when refused or failed.
 */
async function main(): Promise<number> {
  const config = loadConfig(process.env, process.cwd());
  // Read: the embedded PostgreSQL it may start does not inherit them.
  withdrawSecretVariables();
  const outcome = await auditArchive(process.argv.slice(2), config);
  if (outcome.result) process.stdout.write(JSON.stringify(outcome.result) + '\n');
  if (outcome.error) process.stderr.write(`writ: audit:archive failed: ${outcome.error}\n`);
  return outcome.code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`writ: audit:archive failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(2);
  },
);
