import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spinningPolicyModule } from '@writ/testing';
import { defaultPolicyPath } from './default-policy';
import { PolicyLoadError } from './policy-errors';
import { probePolicy } from './policy-probe';

const fixture = (name: string) => readFileSync(join(__dirname, '..', 'test-fixtures', name));

describe('probePolicy', () => {
  it('lets through a policy that answers: the default bundle, an echo, one that traps, bytes that are no policy', async () => {
    await expect(probePolicy(readFileSync(defaultPolicyPath()), null)).resolves.toBeUndefined();
    await expect(probePolicy(readFileSync(defaultPolicyPath()), { writ: { config: {} } })).resolves.toBeUndefined();
    await expect(probePolicy(fixture('echo.wasm'), null)).resolves.toBeUndefined();
    // A trap at run time is a deny, not a hang; what is wrong with a module is the load's to say.
    await expect(probePolicy(fixture('conflict.wasm'), null)).resolves.toBeUndefined();
    await expect(probePolicy(Buffer.from('not a policy'), null)).resolves.toBeUndefined();
  });

  it('refuses a policy that does not answer in time (a module that spins), off the event loop', async () => {
    let ticks = 0;
    const ticking = setInterval(() => (ticks += 1), 50);
    try {
      const refused = await probePolicy(spinningPolicyModule(fixture('echo.wasm')), null, 1_000).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(PolicyLoadError);
      expect(refused).toMatchObject({ code: 'POLICY_TOO_SLOW', message: expect.stringMatching(/did not answer a sample token exchange within 1000 ms/) });
    } finally {
      clearInterval(ticking);
    }
    // The event loop kept turning while the policy spun on the worker.
    expect(ticks).toBeGreaterThanOrEqual(10);
  });
});
