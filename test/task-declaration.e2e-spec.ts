import { createTask, exchangeFields, seedWorld, tasksToken, World } from './support/grant-flow';
import { sendJson, tokenRequest } from './support/oauth-client';
import { seedConnector } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const OPERATIONS = [
  {
    name: 'payouts.create',
    method: 'POST',
    path: '/v1/payouts',
    risk: 'write',
    constraints: {
      destination: { in: 'body', field: 'destination', op: 'eq' },
      amount_max: { in: 'body', field: 'amount', op: 'lte' },
      currency: { in: 'body', field: 'currency', op: 'eq' },
      fee_min: { in: 'body', field: 'fee', op: 'gte' },
    },
  },
  { name: 'payouts.list', method: 'GET', path: '/v1/payouts', risk: 'read', constraints: { currency: { in: 'query', field: 'currency', op: 'eq' } } },
  { name: 'refunds.create', method: 'POST', path: '/v1/refunds', risk: 'write', constraints: { amount_max: { in: 'body', field: 'amount', op: 'gte' } } },
  { name: 'weird.op', method: 'POST', path: '/v1/weird', risk: 'write', constraints: { level: { in: 'body', field: 'level', op: 'neq' } } },
];
const entry = (actions: string[], constraints?: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: 'connector',
  connector: 'ledger',
  actions,
  ...(constraints ? { constraints } : {}),
  ...extra,
});
const PAYOUT = { destination: 'acct_1', amount_max: 1000, currency: 'usd' };

/**
 * `POST /v1/tasks` checks the declared purpose against the catalogue: the orchestrator learns
 * of an entry nobody could ever use (or enforce) at declaration, field by field.
 */
describe('task declaration: purpose and limits validated at declaration', () => {
  let services: TestServices;
  let world: World;
  let token: string;

  beforeAll(async () => {
    services = await startTestServices();
    world = await seedWorld(services.runtime.pool);
    await seedConnector(services.runtime.pool, 'ledger', OPERATIONS);
    token = await tasksToken(services, world.orchestrator);
  });
  afterAll(() => services.close());

  const declare = (allowed: unknown[]) =>
    sendJson('POST', `${services.issuer}/v1/tasks`, { agent_id: 'agent-1', purpose: 'test', allowed, ttl_seconds: 600 }, token);
  const fieldsOf = (response: { body: { fields: Array<{ field: string; message: string }> } }) => response.body.fields;

  it.each([
    ['an unknown connector', [{ type: 'connector', connector: 'ghost', actions: ['x'] }], 'allowed[0].connector', /no connector/],
    ['an action outside the catalogue', [entry(['payouts.create', 'payouts.teleport'], PAYOUT)], 'allowed[0].actions[1]', /no operation/],
    [
      'a constraint one of the actions cannot enforce',
      [entry(['payouts.create', 'payouts.list'], PAYOUT)],
      'allowed[0].constraints.amount_max',
      /cannot be enforced on payouts\.list/,
    ],
    ['a constraint no action defines', [entry(['payouts.list'], { bogus: 1 })], 'allowed[0].constraints.bogus', /cannot be enforced/],
    ['a string for lte', [entry(['payouts.create'], { ...PAYOUT, amount_max: '1000' })], 'allowed[0].constraints.amount_max', /number/],
    ['a string for gte', [entry(['payouts.create'], { ...PAYOUT, fee_min: 'low' })], 'allowed[0].constraints.fee_min', /number/],
    ['an operator Writ does not support', [entry(['weird.op'], { level: 3 })], 'allowed[0].constraints.level', /operator "neq"/],
    ['an unknown member of an entry', [entry(['payouts.list'], undefined, { budget: 3 })], 'allowed[0].budget', /not supported/],
  ])('refuses %s with 400 naming the field', async (_name, allowed, field, message) => {
    const response = await declare(allowed);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(fieldsOf(response)).toEqual(expect.arrayContaining([{ field, message: expect.stringMatching(message) }]));
  });

  it('refuses operators that disagree across the actions of one entry unless the value fits every one', async () => {
    // amount_max is lte on payouts.create and gte on refunds.create: a number fits both.
    expect((await declare([entry(['payouts.create', 'refunds.create'], { amount_max: 10 })])).status).toBe(201);
  });

  it.each([
    ['an unknown limit', { calls: 1, rate: 2 }, 'allowed[0].limits.rate', /not a known limit/],
    ['calls that are not a positive integer', { calls: 1.5 }, 'allowed[0].limits.calls', /positive integer/],
    ['zero calls', { calls: 0 }, 'allowed[0].limits.calls', /positive integer/],
    ['calls as a string', { calls: '3' }, 'allowed[0].limits.calls', /positive integer/],
    ['an empty limits object', {}, 'allowed[0].limits', /calls or sum/],
    ['limits that are not an object', [3], 'allowed[0].limits', /object/],
    ['an empty sum', { sum: {} }, 'allowed[0].limits.sum', /at least one/],
    ['a negative sum', { sum: { amount_max: -5 } }, 'allowed[0].limits.sum.amount_max', /positive number/],
    ['a sum over a constraint the entry does not declare', { sum: { fee_min: 5 } }, 'allowed[0].limits.sum.fee_min', /declares/],
    ['a sum over an eq constraint', { sum: { currency: 5 } }, 'allowed[0].limits.sum.currency', /lte/],
  ])('refuses %s in limits, naming the field', async (_name, limits, field, message) => {
    const response = await declare([entry(['payouts.create'], PAYOUT, { limits })]);
    expect(response.status).toBe(400);
    expect(fieldsOf(response)).toEqual(expect.arrayContaining([{ field, message: expect.stringMatching(message) }]));
  });

  it('refuses a sum over a constraint bound with gte by another action of the entry', async () => {
    const response = await declare([entry(['payouts.create', 'refunds.create'], { amount_max: 10 }, { limits: { sum: { amount_max: 100 } } })]);
    expect(response.status).toBe(400);
    expect(fieldsOf(response)).toEqual([{ field: 'allowed[0].limits.sum.amount_max', message: expect.stringMatching(/refunds\.create/) }]);
  });

  it('accepts valid limits, stores them with the entry and creates nothing for a refused declaration', async () => {
    const created = await declare([entry(['payouts.create'], PAYOUT, { limits: { calls: 3, sum: { amount_max: 2500.5 } } })]);
    expect(created.status).toBe(201);
    const { rows } = await services.runtime.pool.query(`SELECT rule, maximum::float8 AS maximum FROM task_budgets WHERE task_id = $1 ORDER BY rule`, [
      created.body.task_id,
    ]);
    expect(rows).toEqual([
      { rule: 'calls', maximum: 3 },
      { rule: 'sum:amount_max', maximum: 2500.5 },
    ]);
    const before = Number((await services.runtime.pool.query('SELECT count(*) FROM tasks')).rows[0].count);
    expect((await declare([entry(['payouts.create'], PAYOUT, { limits: { calls: -1 } })])).status).toBe(400);
    expect(Number((await services.runtime.pool.query('SELECT count(*) FROM tasks')).rows[0].count)).toBe(before);
  });

  it('keeps the floor at exchange for a task declared before the catalogue changed', async () => {
    const task = await createTask(services, world.orchestrator, { allowed: [entry(['payouts.create'], PAYOUT)] });
    // The connector's operation loses the constraint after the declaration.
    const narrowed = OPERATIONS.map((operation) =>
      operation.name === 'payouts.create' ? { ...operation, constraints: { currency: operation.constraints.currency } } : operation,
    );
    await services.runtime.pool.query('UPDATE connectors SET operations = $2 WHERE id = $1', ['ledger', JSON.stringify(narrowed)]);
    try {
      // No wait: a catalogue held from before the change is dropped when the change is
      // notified, or caught by the issuing statement (the operation is no longer the decided one).
      const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [entry(['payouts.create'], PAYOUT)]));
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_authorization_details');
    } finally {
      await services.runtime.pool.query('UPDATE connectors SET operations = $2 WHERE id = $1', ['ledger', JSON.stringify(OPERATIONS)]);
    }
  });
});
