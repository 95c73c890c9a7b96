import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';

/** Debian's Chromium (installed by `.ci/run` with apt), or `WRIT_CHROMIUM`. */
export function findChromium(): string | undefined {
  return [process.env.WRIT_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path): path is string => !!path && existsSync(path));
}

/**
 * `describe` when a Chromium is there or CI is set (in CI the suite must run, and fails
 * loudly without a browser); otherwise `describe.skip`, with a note saying why.
 */
export function describeWithBrowser(name: string, body: () => void): void {
  if (findChromium() || process.env.CI) return describe(name, body);
  process.stdout.write(`${name}: skipped, no Chromium found (apt-get install chromium, or set WRIT_CHROMIUM)\n`);
  describe.skip(name, body);
}

/** Launches headless Chromium through playwright-core (no browser download: the system one). */
export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  const executablePath = findChromium();
  if (!executablePath) throw new Error('no Chromium: apt-get install chromium (or set WRIT_CHROMIUM)');
  return chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}
