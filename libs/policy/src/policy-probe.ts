import { Worker } from 'node:worker_threads';
import { DEFAULT_ENTRYPOINT, readPolicyBundle } from './policy-bundle';
import { PolicyLoadError } from './policy-errors';
import { samplePolicyInput } from './sample-policy-input';

/** How long a new policy may take to load and answer the sample request before it is refused. */
export const POLICY_PROBE_TIMEOUT_MS = 5_000;

/**
 * Probes run at once in a process. Each is a worker thread: an isolate of its own (about 12 MB
 * idle), the module compiled, and up to 256 MB of heap and 64 MiB of WebAssembly memory for a
 * policy that allocates; a dry run probes too, and `WRIT_MAX_IN_FLIGHT` (200) of them at once
 * were as many workers, enough to exhaust the process's memory.
 */
export const MAX_CONCURRENT_POLICY_PROBES = 2;

/** Thrown by {@link probePolicy} for a dry run while {@link MAX_CONCURRENT_POLICY_PROBES} probes run: retry later. */
export class PolicyProbeBusyError extends Error {
  override readonly name = 'PolicyProbeBusyError';
}

let probesRunning = 0;
const probesWaiting: Array<() => void> = [];

/** A probe's slot: waits for one, or (`wait` false) throws {@link PolicyProbeBusyError} when none is free. */
async function probeSlot(wait: boolean): Promise<() => void> {
  while (probesRunning >= MAX_CONCURRENT_POLICY_PROBES) {
    if (!wait) throw new PolicyProbeBusyError(`${MAX_CONCURRENT_POLICY_PROBES} policies are being tried already; retry later`);
    await new Promise<void>((resolve) => probesWaiting.push(resolve));
  }
  probesRunning += 1;
  return () => {
    probesRunning -= 1;
    probesWaiting.shift()?.();
  };
}

/**
 * What the probe's worker runs: the policy loaded (its start function included) with its data,
 * asked the sample request. A load failure or a trap is reported as an answer: the caller's own
 * load checks the module and says what is wrong with it, and a trap at run time is a deny.
 */
const PROBE_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { loadPolicy } = require(workerData.opaWasm);
(async () => {
  const policy = await loadPolicy(workerData.wasm, { initial: 5, maximum: 1024 });
  policy.setData(workerData.data);
  return policy.evaluate(workerData.input, workerData.entrypoint);
})().then(
  (resultSet) => parentPort.postMessage({ outcome: 'answered', resultSet: workerData.answer ? resultSet : undefined }),
  (error) => parentPort.postMessage({ outcome: 'failed', error: workerData.answer ? String((error && error.message) || error) : undefined }),
);
`;

/**
 * What the worker answered a dry run's input: the raw result set (for {@link normalizeDecision}),
 * or why it failed (a trap, or a load failure the caller's own load reports first).
 */
export type PolicyProbeAnswer = { resultSet: unknown } | { failed: string };

/**
 * Runs a policy about to be put in force (an `opa build` bundle or a `.wasm`, with its data
 * override) on a worker thread, and refuses it ({@link PolicyLoadError} `POLICY_TOO_SLOW`) when
 * it has not loaded and answered the sample request ({@link samplePolicyInput}) within
 * `timeoutMs`, or exhausted the worker's heap. A policy evaluates in-process, on the event loop
 * of every instance: one that loops (an uploaded module need not come from Rego) or whose
 * comprehensions grow without bound would stop every instance it reaches, where a worker is
 * simply terminated. OPA's WebAssembly offers no way to interrupt an evaluation, so this is a
 * check at the door; input-dependent blow-ups are the policy author's to test (`opa test`).
 * `request`: the input to answer instead of the sample (a dry run's, which the caller is about
 * to evaluate on its event loop), and how to name it in the refusal. At most
 * {@link MAX_CONCURRENT_POLICY_PROBES} probes run at once: a policy about to be put in force waits
 * for its turn, a dry run (`request` given) is refused with {@link PolicyProbeBusyError}.
 * With `request`, returns the worker's answer to it: the dry run uses it rather than evaluate the
 * input again on its event loop (an input that took 4.9 s passed and then held the loop as long).
 */
export async function probePolicy(
  source: Uint8Array,
  data: Record<string, unknown> | null,
  timeoutMs = POLICY_PROBE_TIMEOUT_MS,
  entrypoint = DEFAULT_ENTRYPOINT,
  request?: { input: unknown; description: string },
): Promise<PolicyProbeAnswer | undefined> {
  // Parsing the bundle runs none of its code; a malformed one is refused by the caller's load.
  let bundle: ReturnType<typeof readPolicyBundle>;
  try {
    bundle = readPolicyBundle(source, { entrypoint });
  } catch {
    return undefined;
  }
  const release = await probeSlot(request === undefined);
  try {
    return await runProbe(bundle, data, timeoutMs, entrypoint, request);
  } finally {
    release();
  }
}

async function runProbe(
  bundle: ReturnType<typeof readPolicyBundle>,
  data: Record<string, unknown> | null,
  timeoutMs: number,
  entrypoint: string,
  request: { input: unknown; description: string } | undefined,
): Promise<PolicyProbeAnswer | undefined> {
  const worker = new Worker(PROBE_SOURCE, {
    eval: true,
    workerData: {
      opaWasm: require.resolve('@open-policy-agent/opa-wasm'),
      wasm: bundle.wasm,
      data: data ?? bundle.data,
      input: request ? request.input : samplePolicyInput(),
      entrypoint,
      answer: request !== undefined,
    },
    resourceLimits: { maxOldGenerationSizeMb: 256 },
    stdout: true,
    stderr: true,
  });
  // What the policy prints (Rego's print) is not the probe's to show: read and dropped, never left to fill.
  worker.stdout.resume();
  worker.stderr.resume();
  const what = request?.description ?? 'a sample token exchange';
  let timer: NodeJS.Timeout | undefined;
  try {
    type Outcome = { outcome: 'answered'; resultSet?: unknown } | { outcome: 'timeout' | 'memory' | 'failed'; error?: string };
    const answer = await new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => resolve({ outcome: 'timeout' }), timeoutMs);
      worker.once('message', (message: Outcome) => resolve(message));
      worker.once('error', (error: Error & { code?: string }) =>
        resolve({ outcome: error.code === 'ERR_WORKER_OUT_OF_MEMORY' ? 'memory' : 'failed', error: error.message }),
      );
      worker.once('exit', () => resolve({ outcome: 'failed', error: 'the worker exited' }));
    });
    const outcome = answer.outcome;
    if (outcome === 'timeout') {
      throw new PolicyLoadError(
        'POLICY_TOO_SLOW',
        `the policy did not answer ${what} within ${timeoutMs} ms (does it loop, or iterate over more than it should?)`,
      );
    }
    if (outcome === 'memory') throw new PolicyLoadError('POLICY_TOO_SLOW', `the policy exhausted the memory it may use on ${what}`);
    if (!request) return undefined;
    return answer.outcome === 'answered' ? { resultSet: answer.resultSet } : { failed: answer.error ?? 'the policy failed' };
  } finally {
    clearTimeout(timer);
    await worker.terminate();
  }
}
