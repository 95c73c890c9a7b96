import { loadConfig, withdrawSecretVariables } from '@writ/config';
import { auditVerify } from './audit-verify-command';

/**
 * `npm run audit:verify [-- --checkpoints FILE] [--public-key FILE]...` (or `-- --archive DIR`): prints
 * `{valid, events, first_invalid_seq?, reason?, checkpoints_verified, last_checkpoint_seq, …}`.
 * Exits 0 when the chain verifies, 1 when it does not, 2 when it cannot be read. With
 * `-- --print-public-keys`: prints the checkpoint public keys of the configured master keys (a
 * key file for `--public-key`, e.g. before a previous master key is dropped).
 */
async function main(): Promise<number> {
  const args = process.argv.slice(2);
  // With --public-key the master key is not needed: the check is possible without any secret.
  const config = loadConfig(process.env, process.cwd(), {
    masterKeyOptional: args.includes('--public-key') || args.includes('--archive') || args.includes('--export'),
  });
  // Read: the embedded PostgreSQL it may start does not inherit them.
  withdrawSecretVariables();
  const outcome = await auditVerify(args, config);
  if (outcome.result) process.stdout.write(JSON.stringify(outcome.result) + '\n');
  if (outcome.publicKeys) process.stdout.write(JSON.stringify(outcome.publicKeys, null, 2) + '\n');
  if (outcome.error) process.stderr.write(`writ: audit:verify cannot run: ${outcome.error}\n`);
  return outcome.code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`writ: audit:verify cannot run: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(2);
  },
);
