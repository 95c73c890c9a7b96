import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spinningPolicyModule } from '@writ/testing';
import { defaultPolicyPath } from './default-policy';
import { PolicyLoadError } from './policy-errors';
import { MAX_CONCURRENT_POLICY_PROBES, PolicyProbeBusyError, probePolicy } from './policy-probe';
import { samplePolicyInput } from './sample-policy-input';

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

  it('runs two probes at once: a dry run beyond them is refused, a policy to put in force waits its turn', async () => {
    const spinning = spinningPolicyModule(fixture('echo.wasm'));
    const started = Date.now();
    const held = Array.from({ length: MAX_CONCURRENT_POLICY_PROBES }, () => probePolicy(spinning, null, 1_000).catch((error: unknown) => error));
    const dryRun = { input: samplePolicyInput(), description: "the dry run's input" };
    await expect(probePolicy(readFileSync(defaultPolicyPath()), null, undefined, undefined, dryRun)).rejects.toBeInstanceOf(PolicyProbeBusyError);
    await expect(probePolicy(readFileSync(defaultPolicyPath()), null)).resolves.toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    for (const refused of await Promise.all(held)) expect(refused).toMatchObject({ code: 'POLICY_TOO_SLOW' });
    // Free again: a dry run is probed, and given the worker's answer to its input (a trap: why).
    await expect(probePolicy(readFileSync(defaultPolicyPath()), null, undefined, undefined, dryRun)).resolves.toEqual({
      resultSet: [{ result: expect.objectContaining({ allow: true }) }],
    });
    const conflicting = { input: { a: true, b: true }, description: "the dry run's input" };
    await expect(probePolicy(fixture('conflict.wasm'), null, undefined, undefined, conflicting)).resolves.toEqual({ failed: expect.any(String) });
  });
});
