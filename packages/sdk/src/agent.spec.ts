import { exportJWK, generateKeyPair } from 'jose';
import { Agent } from './agent.js';
import { gatewayUrlFor } from './gateway-path.js';
import { GatewayPathError, PolicyRefusalError, reasonsOf } from './errors.js';

const ISSUER = 'https://writ.example';

/** A token endpoint that answers from a script and records when and what it was asked. */
function scriptedServer(answers: Array<{ status: number; body: Record<string, unknown> }>) {
  const requests: Array<{ form: URLSearchParams }> = [];
  const fetchImpl = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      return json(200, { issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` });
    }
    requests.push({ form: new URLSearchParams(init?.body as string) });
    const answer = answers.shift()!;
    return json(answer.status, answer.body);
  };
  return { fetch: fetchImpl, requests };
}

async function agentWith(server: ReturnType<typeof scriptedServer>): Promise<Agent> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'k1' };
  return new Agent({ issuer: ISSUER, gatewayUrl: 'https://gw.example', clientId: 'agent-1', key: jwk, fetch: server.fetch, dpop: false });
}

describe('Agent approval polling', () => {
  afterEach(() => jest.useRealTimers());

  it("polls with the server's interval and approval_id, 5 s slower after each slow_down", async () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const pending = {
      status: 400,
      body: { error: 'authorization_pending', error_description: 'a human must approve this request: amount above 100', approval_id: 'ap-1', interval: 1 },
    };
    const server = scriptedServer([
      pending,
      { status: 400, body: { error: 'slow_down' } },
      { ...pending, body: { ...pending.body, error_description: 'the approval is still pending' } },
      { status: 200, body: { access_token: 'at', token_type: 'Bearer', expires_in: 120, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' } },
    ]);
    const agent = await agentWith(server);
    const waits = jest.spyOn(globalThis, 'setTimeout');
    const seen: unknown[] = [];
    let settled = false;
    const credential = agent.credential('task-token', { connector: 'payments', action: 'payouts.create' }, { onPending: (p) => seen.push(p) });
    credential.finally(() => (settled = true)).catch(() => undefined);
    while (!settled) await jest.advanceTimersByTimeAsync(250);
    expect((await credential).accessToken).toBe('at');
    // The waits between polls, as asked of the (fake) clock.
    expect(waits.mock.calls.map(([, ms]) => ms).filter((ms) => typeof ms === 'number' && ms >= 1000)).toEqual([1000, 6000, 6000]);
    expect(server.requests.map((request) => request.form.get('approval_id'))).toEqual([null, 'ap-1', 'ap-1', 'ap-1']);
    expect(seen).toEqual([
      { approvalId: 'ap-1', reasons: ['amount above 100'], interval: 1 },
      { approvalId: 'ap-1', reasons: ['amount above 100'], interval: 6 },
    ]);
    // Each poll is a new client assertion.
    expect(new Set(server.requests.map((request) => request.form.get('client_assertion'))).size).toBe(4);
  });

  it('does not cache a refusal', async () => {
    const server = scriptedServer([
      {
        status: 400,
        body: { error: 'invalid_authorization_details', error_description: 'denied by policy: destination acct_x is not the declared payee; out of purpose' },
      },
      { status: 200, body: { access_token: 'at2', token_type: 'Bearer', expires_in: 120 } },
    ]);
    const agent = await agentWith(server);
    const request = { connector: 'payments', action: 'payouts.get' };
    const refused = await agent.credential('t', request).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(PolicyRefusalError);
    expect((refused as PolicyRefusalError).reasons).toEqual(['destination acct_x is not the declared payee', 'out of purpose']);
    expect((await agent.credential('t', request)).accessToken).toBe('at2');
  });
});

describe('gatewayUrlFor', () => {
  it('builds URLs under the connector only', () => {
    expect(gatewayUrlFor('https://gw.example/base/', 'payments', '/v1/payouts?limit=5&x=a%20b').href).toBe(
      'https://gw.example/base/connectors/payments/v1/payouts?limit=5&x=a%20b',
    );
    for (const path of ['https://evil.example/', '//evil.example/x', '/../x', '/a/./b', '/a/%2E%2E/b', '/a%2fb', '/a\\b', '', 'x', '/a#b', '/a\nb', '/a//b']) {
      expect(() => gatewayUrlFor('https://gw.example', 'payments', path)).toThrow(GatewayPathError);
    }
    expect(() => gatewayUrlFor('https://gw.example', '..', '/x')).toThrow(GatewayPathError);
  });

  it("reads the policy's reasons from an error description", () => {
    expect(reasonsOf('denied by policy: a; b')).toEqual(['a', 'b']);
    expect(reasonsOf('denied by policy: no reason given')).toEqual([]);
    expect(reasonsOf('the task is completed')).toEqual(['the task is completed']);
  });
});
