import { loadConfig } from '@writ/config';
import { createLogger, createRuntime } from '@writ/platform';

/**
 * `npm run audit:verify`: walks the whole audit hash chain of the configured database
 * (embedded unless WRIT_DATABASE_URL) and prints `{valid, events, first_invalid_seq?, reason?}`.
 * Exits 1 when the chain is not valid, 2 when it cannot be read.
 */
async function main(): Promise<number> {
  const config = loadConfig();
  const runtime = await createRuntime({ config, logger: createLogger('warn'), poolSize: 2 });
  try {
    const result = await runtime.audit.verify();
    process.stdout.write(JSON.stringify(result) + '\n');
    return result.valid ? 0 : 1;
  } finally {
    await runtime.close();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`writ: audit:verify cannot run: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(2);
  },
);
