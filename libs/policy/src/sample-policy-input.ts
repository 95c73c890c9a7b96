import type { PolicyInput } from './policy-input';

/**
 * The input the server builds for "pay invoice INV-42", asking exactly what was declared: what a
 * new policy must answer before it is put in force (see `probePolicy`), and the specs' example.
 */
export function samplePolicyInput(): PolicyInput {
  return {
    request: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      authorization_details: [
        {
          type: 'connector',
          connector: 'payments',
          actions: ['payouts.create'],
          constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd', account: 'acct_1' },
        },
      ],
      resource: 'http://localhost:4001/connectors/payments',
      dpop_jkt: null,
    },
    agent: { id: 'agent-1', name: 'Invoice bot', status: 'active' },
    task: {
      id: '0b7c6a6e-3f0e-4d5e-9a57-1f7a2a8f4c11',
      agent_id: 'agent-1',
      orchestrator_id: 'orch-1',
      purpose: 'pay invoice INV-42 to Acme',
      status: 'active',
      allowed: [
        {
          type: 'connector',
          connector: 'payments',
          actions: ['payouts.create', 'payouts.get'],
          constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd', account: 'acct_1' },
        },
        { type: 'connector', connector: 'payments', actions: ['payouts.list'] },
      ],
      created_at: '2026-11-28T10:00:00.000Z',
      expires_at: '2026-11-28T10:15:00.000Z',
      seconds_remaining: 840,
      on_behalf_of: 'user-7',
      user: null,
      metadata: {},
      history: { grants_issued: 1, refusals: 0, out_of_purpose_requests: 0 },
    },
    connectors: {
      payments: {
        id: 'payments',
        name: 'Payments',
        operations: {
          'payouts.create': {
            method: 'POST',
            path: '/v1/payouts',
            risk: 'write',
            constraints: {
              destination: { in: 'body', field: 'destination', op: 'eq' },
              amount_max: { in: 'body', field: 'amount', op: 'lte' },
              currency: { in: 'body', field: 'currency', op: 'eq' },
              // The connected account the platform's key acts for (Stripe Connect): checked like any field.
              account: { in: 'header', field: 'Stripe-Account', op: 'eq' },
            },
          },
          'payouts.refund': { method: 'POST', path: '/v1/payouts/{id}/refund', risk: 'write', constraints: {} },
          'payouts.list': { method: 'GET', path: '/v1/payouts', risk: 'read', constraints: {} },
        },
      },
    },
    connections: {},
    time: { now: '2026-11-28T10:01:00.000Z', now_unix: 1795860060, weekday: 'Sat', hour_utc: 10 },
  };
}
