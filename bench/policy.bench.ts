import { ActivePolicy, buildPolicyInput } from '@writ/policy';
import { PAYOUTS_CREATE } from '@writ/testing';

/** One in-process evaluation of the default policy, beside a baseline of the same size. */
export interface PolicyBench {
  evaluations: number;
  p50_us: number;
  p99_us: number;
  baseline_json_roundtrip_p50_us: number;
  ratio_p50_to_baseline: number;
  target_p99_us: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function measure(iterations: number, run: () => unknown): number[] {
  const samples = new Array<number>(iterations);
  for (let index = 0; index < iterations; index += 1) {
    const started = process.hrtime.bigint();
    run();
    samples[index] = Number(process.hrtime.bigint() - started) / 1000;
  }
  return samples.sort((a, b) => a - b);
}

const PAYOUT = {
  type: 'connector' as const,
  connector: 'payments',
  actions: ['payouts.create'],
  constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' },
};

/** The input of a payout inside its task's declared purpose, as token exchange builds it. */
export function payoutInput() {
  const now = new Date();
  return buildPolicyInput({
    request: { grantType: 'urn:ietf:params:oauth:grant-type:token-exchange', authorizationDetails: [PAYOUT], resource: null, dpopJkt: null },
    agent: { id: 'agent-1', name: 'Billing agent', status: 'active' },
    task: {
      id: '00000000-0000-4000-8000-000000000001',
      agentId: 'agent-1',
      orchestratorId: 'orch-1',
      purpose: 'pay invoice INV-42',
      status: 'active',
      allowed: [{ ...PAYOUT, constraints: { ...PAYOUT.constraints, amount_max: 50000 } }],
      createdAt: now,
      expiresAt: new Date(now.getTime() + 600_000),
      onBehalfOf: null,
      metadata: {},
      grantsIssued: 0,
      refusals: 0,
      outOfPurposeRequests: 0,
    },
    connectors: [
      {
        id: 'payments',
        name: 'Payments',
        operations: [PAYOUTS_CREATE],
      },
    ],
    now,
  });
}

/**
 * Times `PolicyEngine.evaluate` of the default policy on a payout inside its declared
 * purpose, and as a baseline a JSON round trip of the same input (the least any evaluation
 * must do to hand the input to WASM).
 */
export async function benchPolicy(iterations = 20_000): Promise<PolicyBench> {
  const policy = await ActivePolicy.load(undefined);
  const engine = policy.current();
  const input = payoutInput();
  if (engine.evaluate(input).allow !== true) throw new Error('the benchmark input must be allowed by the default policy');
  for (let index = 0; index < 2000; index += 1) engine.evaluate(input);
  const evaluation = measure(iterations, () => engine.evaluate(input));
  const baseline = measure(iterations, () => JSON.parse(JSON.stringify(input)));
  const p50 = percentile(evaluation, 50);
  const baselineP50 = percentile(baseline, 50);
  return {
    evaluations: iterations,
    p50_us: p50,
    p99_us: percentile(evaluation, 99),
    baseline_json_roundtrip_p50_us: baselineP50,
    ratio_p50_to_baseline: p50 / baselineP50,
    target_p99_us: 100,
  };
}
