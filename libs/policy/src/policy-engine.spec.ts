import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultPolicyPath } from './default-policy';
import { readPolicyBundle } from './policy-bundle';
import { PolicyEngine } from './policy-engine';
import { PolicyEvaluationError, PolicyLoadError } from './policy-errors';
import type { PolicyInput } from './policy-input';
import { samplePolicyInput } from './sample-policy-input';
import { readTarGz } from './read-tar-gz';

const fixtures = join(__dirname, '..', 'test-fixtures');
const fixture = (name: string) => readFileSync(join(fixtures, name));

const exampleInput = samplePolicyInput;

/** The example input with the requested constraints changed. */
function asking(constraints: Record<string, unknown>, action = 'payouts.create'): PolicyInput {
  const input = exampleInput();
  input.request.authorization_details = [
    { type: 'connector', connector: 'payments', actions: [action], constraints: { ...input.request.authorization_details[0].constraints, ...constraints } },
  ];
  return input;
}

describe('PolicyEngine with the committed default bundle', () => {
  let engine: PolicyEngine;

  beforeAll(async () => {
    engine = await PolicyEngine.load(readFileSync(defaultPolicyPath()));
  });

  it('loads the bundle with its data and a SHA-256 version', () => {
    expect(engine.entrypoint).toBe('writ/grant/decision');
    expect(engine.format).toBe('bundle');
    expect(engine.version).toMatch(/^[0-9a-f]{64}$/);
    expect(engine.data).toMatchObject({ writ: { config: { quarantine_after: 3, approval: {} } } });
  });

  it('allows exactly what the task declared, one use, 120 s for a write', () => {
    expect(engine.evaluate(exampleInput())).toEqual({
      allow: true,
      reasons: ["the request is within the task's declared purpose"],
      max_ttl_seconds: 120,
      max_uses: 1,
      requires_approval: false,
      quarantine: false,
      out_of_purpose: false,
    });
  });

  it('allows a read for 300 s with unlimited uses', () => {
    const decision = engine.evaluate(asking({}, 'payouts.list'));
    // payouts.list defines no constraint, so the carried-over ones are unknown to it.
    expect(decision.allow).toBe(false);
    const input = exampleInput();
    input.request.authorization_details = [{ type: 'connector', connector: 'payments', actions: ['payouts.list'] }];
    expect(engine.evaluate(input)).toMatchObject({ allow: true, max_ttl_seconds: 300, max_uses: null });
  });

  it('caps the TTL at the time the task has left', () => {
    const input = exampleInput();
    input.task.seconds_remaining = 42;
    expect(engine.evaluate(input)).toMatchObject({ allow: true, max_ttl_seconds: 42 });
  });

  it.each([
    ['a widened amount', asking({ amount_max: 90000 }), 'constraint amount_max 90000 is wider than the declared 50000 (lte)'],
    ['another payee', asking({ destination: 'acct_2' }), 'constraint destination acct_2 differs from the declared acct_1 (eq)'],
    ['another currency type', asking({ currency: ['usd'] }), 'constraint currency [usd] differs from the declared usd (eq)'],
    ['a missing constraint', asking({ destination: undefined }), 'constraint destination is declared by the task but missing from the request'],
    [
      'a constraint the catalogue lacks',
      asking({ fee_payer: 'acme' }),
      'constraint fee_payer is not defined by operation payouts.create of connector payments',
    ],
    ['an undeclared action', asking({}, 'payouts.refund'), 'action payouts.refund is not declared for connector payments in the task'],
  ])('refuses %s as out of purpose', (_name, input, reason) => {
    const decision = engine.evaluate(input);
    expect(decision).toMatchObject({ allow: false, out_of_purpose: true, quarantine: false, max_ttl_seconds: 0 });
    expect(decision.reasons).toContain(reason);
  });

  it('refuses a connector the task did not declare', () => {
    const input = exampleInput();
    input.request.authorization_details = [{ type: 'connector', connector: 'code', actions: ['repo.issues.list'] }];
    expect(engine.evaluate(input)).toMatchObject({
      allow: false,
      out_of_purpose: true,
      reasons: expect.arrayContaining(['connector code is not declared in the task']),
    });
  });

  it('refuses a suspended agent without counting it out of purpose', () => {
    const input = exampleInput();
    input.agent.status = 'suspended';
    expect(engine.evaluate(input)).toMatchObject({
      allow: false,
      out_of_purpose: false,
      reasons: ['agent agent-1 is not active (status suspended)'],
    });
  });

  it('refuses an ended task', () => {
    const input = exampleInput();
    input.task.status = 'completed';
    expect(engine.evaluate(input).reasons).toContain('task 0b7c6a6e-3f0e-4d5e-9a57-1f7a2a8f4c11 is not active (status completed)');
  });

  it('refuses two actions in one credential, and two entries', () => {
    const twoActions = asking({});
    twoActions.request.authorization_details[0].actions = ['payouts.create', 'payouts.get'];
    expect(engine.evaluate(twoActions).allow).toBe(false);
    const twoEntries = exampleInput();
    twoEntries.request.authorization_details.push({ type: 'connector', connector: 'payments', actions: ['payouts.list'] });
    expect(engine.evaluate(twoEntries).reasons).toEqual(['authorization_details must hold exactly one entry (one connector and one action per credential)']);
  });

  it('quarantines on the third out-of-purpose request (quarantine_after 3)', () => {
    const second = asking({ amount_max: 90000 });
    second.task.history.out_of_purpose_requests = 1;
    expect(engine.evaluate(second)).toMatchObject({ allow: false, out_of_purpose: true, quarantine: false });
    const third = asking({ amount_max: 90000 });
    third.task.history.out_of_purpose_requests = 2;
    const decision = engine.evaluate(third);
    expect(decision).toMatchObject({ allow: false, out_of_purpose: true, quarantine: true });
    expect(decision.reasons).toContain('quarantine: this is out-of-purpose request 3 for the task (threshold 3)');
  });

  // What the token endpoint and the Tasks API accept at most: 20 entries declaring one
  // operation's 32 constraints (its catalogue's limit), 100 values in each array. Rendering
  // every reason in full exhausted the module's 64 MiB: a trap, whose deny is not counted
  // out of purpose (no quarantine however often it is repeated).
  it.each([
    ['in', (entry: number) => Array.from({ length: 100 }, (_, value) => value + entry)],
    ['eq', (entry: number) => Array.from({ length: 100 }, (_, value) => value * entry)],
  ])('refuses a widened %s request against the largest declaration without exhausting its memory', (op, declared) => {
    const names = Array.from({ length: 32 }, (_, index) => `c${index}`);
    const input = exampleInput();
    input.connectors.payments.operations['payouts.create'].constraints = Object.fromEntries(names.map((name) => [name, { in: 'query', field: name, op }]));
    input.task.allowed = Array.from({ length: 20 }, (_, entry) => ({
      type: 'connector' as const,
      connector: 'payments',
      actions: ['payouts.create'],
      constraints: Object.fromEntries(names.map((name) => [name, declared(entry)])),
    }));
    input.task.history.out_of_purpose_requests = 2;
    input.request.authorization_details = [
      {
        type: 'connector',
        connector: 'payments',
        actions: ['payouts.create'],
        constraints: Object.fromEntries(names.map((name) => [name, Array.from({ length: 100 }, (_, value) => 1000 - value)])),
      },
    ];
    const decision = engine.evaluate(input);
    expect(decision).toMatchObject({ allow: false, out_of_purpose: true, quarantine: true });
    expect(decision.reasons).toContain('quarantine: this is out-of-purpose request 3 for the task (threshold 3)');
  });

  it('requires approval above a threshold set in data, leaving the default policy untouched', async () => {
    const data = engine.data as { writ: { config: Record<string, unknown> } };
    const withApproval = await engine.withData({
      writ: { config: { ...data.writ.config, approval: { payments: { constraint: 'amount_max', above: 10000 } } } },
    });
    expect(withApproval.version).not.toBe(engine.version);
    expect(withApproval.evaluate(exampleInput())).toEqual({
      allow: false,
      reasons: ['approval required: constraint amount_max 50000 is above the approval threshold 10000'],
      max_ttl_seconds: 120,
      max_uses: 1,
      requires_approval: true,
      quarantine: false,
      out_of_purpose: false,
    });
    expect(withApproval.evaluate(asking({ amount_max: 10000 }))).toMatchObject({ allow: true, requires_approval: false });
    expect(engine.evaluate(exampleInput())).toMatchObject({ allow: true, requires_approval: false });
  });

  it('takes TTL caps and read uses from data', async () => {
    const tuned = await engine.withData({
      writ: { config: { ttl_seconds: { write: 30 }, read_max_uses: 3, connectors: { payments: { max_ttl_seconds: 20 } } } },
    });
    expect(tuned.evaluate(exampleInput())).toMatchObject({ allow: true, max_ttl_seconds: 20, max_uses: 1 });
  });

  it.each([
    ['an empty object', {}],
    ['null', null],
    ['no input', undefined],
    ['a string', 'allow'],
    ['an array', [exampleInput()]],
  ])('denies %s as input', (_name, input) => {
    const decision = engine.evaluate(input as unknown as PolicyInput);
    expect(decision.allow).toBe(false);
    expect(decision.reasons.length).toBeGreaterThan(0);
  });

  it('evaluates the bare policy.wasm without data on the built-in defaults', async () => {
    const wasm = readTarGz(readFileSync(defaultPolicyPath())).get('/policy.wasm')!;
    const bare = await PolicyEngine.load(wasm);
    expect(bare.format).toBe('wasm');
    expect(bare.data).toEqual({});
    expect(bare.evaluate(exampleInput())).toMatchObject({ allow: true, max_ttl_seconds: 120, max_uses: 1 });
  });

  it('loads from an already-read bundle to the same version', async () => {
    const again = await PolicyEngine.load(readPolicyBundle(readFileSync(defaultPolicyPath())));
    expect(again.version).toBe(engine.version);
  });
});

describe('PolicyEngine loading', () => {
  it('refuses a policy without the writ/grant/decision entrypoint', async () => {
    const load = PolicyEngine.load(fixture('other-entrypoint.wasm'));
    await expect(load).rejects.toBeInstanceOf(PolicyLoadError);
    await expect(load).rejects.toMatchObject({ code: 'POLICY_ENTRYPOINT_MISSING', message: expect.stringContaining('other/allow') });
  });

  it('loads that policy by its own entrypoint when told to', async () => {
    const other = await PolicyEngine.load(fixture('other-entrypoint.wasm'), { entrypoint: 'other/allow' });
    expect(other.entrypoint).toBe('other/allow');
  });

  it('refuses bytes that are not a WebAssembly module', async () => {
    await expect(PolicyEngine.load(Buffer.from('package writ.grant'))).rejects.toMatchObject({ code: 'POLICY_FORMAT_INVALID' });
  });

  it('refuses a module that does not compile', async () => {
    const broken = Buffer.concat([Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]), Buffer.from('garbage')]);
    await expect(PolicyEngine.load(broken)).rejects.toMatchObject({ code: 'POLICY_WASM_INVALID' });
  });

  it('refuses a WebAssembly module that is not an OPA policy', async () => {
    const empty = Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    await expect(PolicyEngine.load(empty)).rejects.toMatchObject({ code: 'POLICY_WASM_INVALID' });
  });

  it('refuses data that is not an object', async () => {
    const engine = await PolicyEngine.load(fixture('echo.wasm'));
    await expect(engine.withData([] as unknown as Record<string, unknown>)).rejects.toMatchObject({ code: 'POLICY_DATA_INVALID' });
  });
});

describe('PolicyEngine normalisation of what a policy returns (echo fixture)', () => {
  let echo: PolicyEngine;
  const evaluate = (decision?: unknown) => echo.evaluate((decision === undefined ? {} : { decision }) as unknown as PolicyInput);

  beforeAll(async () => {
    echo = await PolicyEngine.load(fixture('echo.wasm'));
  });

  it('denies an undefined decision (empty result set)', () => {
    expect(evaluate()).toEqual({
      allow: false,
      reasons: ['the policy returned no decision'],
      max_ttl_seconds: 0,
      max_uses: 0,
      requires_approval: false,
      quarantine: false,
      out_of_purpose: false,
    });
  });

  it.each([
    ['null', null, 'the policy decision is not an object'],
    ['true', true, 'the policy decision is not an object'],
    ['an array', [{ allow: true }], 'the policy decision is not an object'],
    ['allow as a string', { allow: 'true', max_ttl_seconds: 60, max_uses: 1 }, 'the policy did not allow the request'],
    ['allow absent', { max_ttl_seconds: 60, max_uses: 1 }, 'the policy did not allow the request'],
    ['no TTL', { allow: true, max_uses: 1 }, 'malformed policy decision: max_ttl_seconds must be a number of at least 1'],
    ['a zero TTL', { allow: true, max_ttl_seconds: 0, max_uses: 1 }, 'malformed policy decision: max_ttl_seconds must be a number of at least 1'],
    ['a TTL as a string', { allow: true, max_ttl_seconds: '60', max_uses: 1 }, 'malformed policy decision: max_ttl_seconds must be a number of at least 1'],
    ['no max_uses', { allow: true, max_ttl_seconds: 60 }, 'malformed policy decision: max_uses must be a positive integer up to 2147483647, or null'],
    [
      'fractional uses',
      { allow: true, max_ttl_seconds: 60, max_uses: 1.5 },
      'malformed policy decision: max_uses must be a positive integer up to 2147483647, or null',
    ],
    ['reasons as a string', { allow: true, max_ttl_seconds: 60, max_uses: 1, reasons: 'ok' }, 'malformed policy decision: reasons must be an array of strings'],
    ['quarantine as a string', { allow: true, max_ttl_seconds: 60, max_uses: 1, quarantine: 'no' }, 'malformed policy decision: quarantine must be a boolean'],
    [
      'allow with quarantine',
      { allow: true, max_ttl_seconds: 60, max_uses: 1, quarantine: true },
      'malformed policy decision: the policy both allowed the request and quarantined the task',
    ],
  ])('denies %s', (_name, decision, reason) => {
    const result = evaluate(decision);
    expect(result.allow).toBe(false);
    expect(result.requires_approval).toBe(false);
    expect(result.reasons).toContain(reason);
  });

  it('keeps a deny and its flags as the policy gave them', () => {
    expect(evaluate({ allow: false, reasons: ['no'], quarantine: true, out_of_purpose: true })).toEqual({
      allow: false,
      reasons: ['no'],
      max_ttl_seconds: 0,
      max_uses: 0,
      requires_approval: false,
      quarantine: true,
      out_of_purpose: true,
    });
  });

  it('accepts a minimal allow: absent flags are false, TTL floored, null uses', () => {
    expect(evaluate({ allow: true, max_ttl_seconds: 59.9, max_uses: null })).toEqual({
      allow: true,
      reasons: ['allowed by policy'],
      max_ttl_seconds: 59,
      max_uses: null,
      requires_approval: false,
      quarantine: false,
      out_of_purpose: false,
    });
  });

  it('turns allow with requires_approval into a pending approval, not an allow', () => {
    expect(evaluate({ allow: true, requires_approval: true, max_ttl_seconds: 60, max_uses: 1, reasons: ['big'] })).toMatchObject({
      allow: false,
      requires_approval: true,
      max_ttl_seconds: 60,
      reasons: ['big'],
    });
  });

  it('degrades an approval without valid caps to a deny', () => {
    expect(evaluate({ allow: false, requires_approval: true, reasons: ['big'] })).toMatchObject({
      allow: false,
      requires_approval: false,
      reasons: [
        'big',
        'malformed policy decision: max_ttl_seconds must be a number of at least 1',
        'malformed policy decision: max_uses must be a positive integer up to 2147483647, or null',
      ],
    });
  });
});

describe('PolicyEngine when the policy traps (conflict fixture)', () => {
  it('throws PolicyEvaluationError carrying a deny, then evaluates normally again', async () => {
    const engine = await PolicyEngine.load(fixture('conflict.wasm'));
    const input = { a: true, b: true } as unknown as PolicyInput;
    let thrown: unknown;
    try {
      engine.evaluate(input);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(PolicyEvaluationError);
    const error = thrown as PolicyEvaluationError;
    expect(error.code).toBe('POLICY_EVALUATION_FAILED');
    expect(error.decision).toMatchObject({ allow: false, reasons: ['the policy could not evaluate the request'] });
    expect(engine.evaluate({ a: true } as unknown as PolicyInput)).toMatchObject({ allow: true, max_ttl_seconds: 60, max_uses: 1 });
    expect(engine.evaluate({ b: true } as unknown as PolicyInput)).toMatchObject({ allow: false, reasons: ['b'] });
  });
});
