import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { Agent } from 'undici';
import { ConnectedAccountError, ConnectedAccounts } from '@writ/accounts';
import { loadConfig } from '@writ/config';
import { createUpstreamDispatcher, sealCredential } from '@writ/connectors';
import { MasterKey } from '@writ/keys';
import { CredentialHeader, SealedCredential, UpstreamCredentials } from './upstream-credentials.service';

const CLIENT_SECRET = `cs_${randomBytes(12).toString('hex')}`;

/** A real token endpoint on loopback that counts requests; `answer` decides each one (numbered from 1). */
class TokenEndpoint {
  requests = 0;
  answer: (n: number, response: ServerResponse) => void = (n, response) => this.issue(n, response);
  private readonly server: Server;
  private readonly arrivals = new EventTarget();

  constructor() {
    this.server = createServer((request: IncomingMessage, response: ServerResponse) => {
      request.resume();
      request.on('end', () => {
        this.requests += 1;
        this.arrivals.dispatchEvent(new Event('request'));
        this.answer(this.requests, response);
      });
    });
  }

  async start(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}/oauth/token`;
  }

  /** A fresh token, `upstream_at_<n>`, valid for an hour. */
  issue(n: number, response: ServerResponse): void {
    this.json(response, 200, { access_token: `upstream_at_${n}`, token_type: 'Bearer', expires_in: 3600 });
  }

  json(response: ServerResponse, status: number, body: unknown): void {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  }

  /** Resolves once the endpoint has received `count` requests in all. */
  async received(count: number): Promise<void> {
    while (this.requests < count) await once(this.arrivals, 'request');
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

type Outcome = { header: CredentialHeader } | { error: { status?: number; reason?: string; message: string; retryAfterSeconds?: number } };

describe('UpstreamCredentials: oauth2_client_credentials single flight', () => {
  const master = new MasterKey(randomBytes(32));
  let endpoint: TokenEndpoint;
  let dispatcher: Agent;
  let credentials: UpstreamCredentials;
  let sealed: SealedCredential;
  /** Calls refused without asking the token endpoint, as the metric counts them. */
  let deferred: string[];

  beforeEach(async () => {
    deferred = [];
    endpoint = new TokenEndpoint();
    const tokenUrl = await endpoint.start();
    dispatcher = createUpstreamDispatcher(loadConfig({ WRIT_UPSTREAM_ALLOWED_NETWORKS: '127.0.0.0/8' }));
    // Only oauth2_authorization_code connectors use connected accounts: none here.
    credentials = new UpstreamCredentials(master, dispatcher, {} as ConnectedAccounts, (connectorId, why) => deferred.push(`${connectorId}:${why}`));
    const baseUrl = 'https://chat.example';
    const credential = { type: 'oauth2_client_credentials' as const, token_url: tokenUrl, client_id: 'writ', client_secret: CLIENT_SECRET };
    const { sealed: bytes, fingerprint, type } = sealCredential(master, 'chat', baseUrl, credential);
    sealed = { connectorId: 'chat', baseUrl, type, sealed: bytes, fingerprint };
  });

  afterEach(async () => {
    jest.restoreAllMocks();
    await dispatcher.close();
    await endpoint.close();
  });

  /** `count` calls started in the same tick, as concurrent gateway calls reach the service, each refusal reported as the proxy reports it. */
  const concurrently = (count: number): Promise<Outcome[]> =>
    Promise.all(
      Array.from({ length: count }, () =>
        credentials.headerFor(sealed).then(
          (header): Outcome => ({ header }),
          (error: Error & { status?: number; reason?: string }): Outcome => {
            // As the proxy does with the answer a call gets.
            credentials.refused(error);
            return { error };
          },
        ),
      ),
    );
  const headers = (outcomes: Outcome[]) => outcomes.flatMap((outcome) => ('header' in outcome ? [outcome.header.value] : []));
  const failures = (outcomes: Outcome[]) => outcomes.flatMap((outcome) => ('error' in outcome ? [outcome.error] : []));

  it('shares one failed fetch between 100 callers: all 503 with the backoff, the endpoint not asked again before it is over', async () => {
    const start = Date.now();
    jest.spyOn(Math, 'random').mockReturnValue(0);
    endpoint.answer = (n, response) => (n === 1 ? endpoint.json(response, 503, { error: 'temporarily_unavailable' }) : endpoint.issue(n, response));
    const outcomes = await concurrently(100);
    // One failed fetch for every caller that waited on it: no retry, which the backoff refuses.
    expect(endpoint.requests).toBe(1);
    expect(headers(outcomes)).toEqual([]);
    const reasons = new Set(failures(outcomes).map((error) => error.reason));
    expect(failures(outcomes)[0]).toMatchObject({ status: 503, reason: 'upstream_token_status_503', retryAfterSeconds: 5 });
    for (const error of failures(outcomes)) {
      expect(error).toMatchObject({ status: 503, retryAfterSeconds: 5 });
      expect(error.message).not.toContain(CLIENT_SECRET);
    }
    expect([...reasons].sort()).toEqual(['upstream_token_backoff', 'upstream_token_status_503']);
    // The endpoint back within the backoff: still not asked.
    jest.spyOn(Date, 'now').mockReturnValue(start + 4_000);
    expect(failures(await concurrently(10)).map((error) => error.reason)).toEqual(new Array(10).fill('upstream_token_backoff'));
    expect(endpoint.requests).toBe(1);
    // After it: one fetch for every caller.
    jest.spyOn(Date, 'now').mockReturnValue(start + 5_500);
    expect(new Set(headers(await concurrently(100)))).toEqual(new Set(['Bearer upstream_at_2']));
    expect(endpoint.requests).toBe(2);
  });

  it('gives every caller the shared failure when a hung token endpoint then fails, then asks again once the backoff is over', async () => {
    const start = Date.now();
    jest.spyOn(Math, 'random').mockReturnValue(0);
    const held: ServerResponse[] = [];
    endpoint.answer = (n, response) => (n === 1 ? held.push(response) : endpoint.json(response, 503, { error: 'temporarily_unavailable' }));
    const early = concurrently(50);
    await endpoint.received(1);
    // More calls arrive while the first fetch hangs: they join it.
    const late = concurrently(50);
    endpoint.json(held[0], 503, { error: 'temporarily_unavailable' });
    const outcomes = [...(await early), ...(await late)];
    expect(endpoint.requests).toBe(1);
    expect(headers(outcomes)).toEqual([]);
    for (const error of failures(outcomes)) expect(error).toMatchObject({ status: 503, retryAfterSeconds: 5 });
    // The identity provider is back, the backoff over: the next call fetches again (a failure is not kept).
    endpoint.answer = (n, response) => endpoint.issue(n, response);
    jest.spyOn(Date, 'now').mockReturnValue(start + 5_500);
    expect(await credentials.headerFor(sealed)).toEqual({ name: 'authorization', value: 'Bearer upstream_at_2' });
    expect(endpoint.requests).toBe(2);
  });

  it('backs off 5 s doubling per failure in a row up to 5 min, per connector; a success starts again from 5 s', async () => {
    let now = Date.now();
    jest.spyOn(Date, 'now').mockImplementation(() => now);
    jest.spyOn(Math, 'random').mockReturnValue(0);
    let down = true;
    endpoint.answer = (n, response) => (down ? endpoint.json(response, 500, {}) : endpoint.issue(n, response));
    const waits: number[] = [];
    for (let failure = 1; failure <= 9; failure += 1) {
      const [outcome] = await concurrently(1);
      expect(outcome).toEqual({ error: expect.objectContaining({ status: 503, reason: 'upstream_token_status_500' }) });
      const wait = (outcome as { error: { retryAfterSeconds: number } }).error.retryAfterSeconds;
      waits.push(wait);
      expect(endpoint.requests).toBe(failure);
      // Ten calls a second before the wait is over: refused, not asked, counted.
      now += (wait - 1) * 1000;
      const refused = failures(await concurrently(10));
      expect(refused).toHaveLength(10);
      for (const error of refused) expect(error).toMatchObject({ status: 503, reason: 'upstream_token_backoff', retryAfterSeconds: 1 });
      expect(refused[0].message).toMatch(
        /unavailable at the last (\d+ token requests|token request) \(upstream_token_status_500\): it is not asked again for 1 s/,
      );
      expect(endpoint.requests).toBe(failure);
      now += 1000;
    }
    expect(waits).toEqual([5, 10, 20, 40, 80, 160, 300, 300, 300]);
    expect(deferred).toEqual(new Array(90).fill('chat:backoff'));
    // Back: one fetch; the next outage starts again from the first interval.
    down = false;
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_10');
    now += 3600_000;
    down = true;
    expect(failures(await concurrently(1))[0]).toMatchObject({ status: 503, retryAfterSeconds: 5 });
  });

  it('jitters the backoff by up to a quarter', async () => {
    jest.spyOn(Math, 'random').mockReturnValue(0.99);
    endpoint.answer = (_n, response) => endpoint.json(response, 502, {});
    const [outcome] = await concurrently(1);
    // 5 s less 24.75 %: 3.76 s, announced as 4.
    expect(outcome).toEqual({ error: expect.objectContaining({ status: 503, reason: 'upstream_token_status_502', retryAfterSeconds: 4 }) });
  });

  it.each([
    ['unreachable', 'upstream_token_unreachable'],
    ['429 without Retry-After', 'upstream_token_status_429'],
  ])('backs off a token endpoint %s too', async (kind, reason) => {
    jest.spyOn(Math, 'random').mockReturnValue(0);
    endpoint.answer = (_n, response) => {
      if (kind === 'unreachable') response.socket?.destroy();
      else endpoint.json(response, 429, { error: 'slow_down' });
    };
    expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ status: 503, reason, retryAfterSeconds: 5 })]);
    expect(failures(await concurrently(5)).map((error) => error.reason)).toEqual(new Array(5).fill('upstream_token_backoff'));
    expect(endpoint.requests).toBe(1);
  });

  it('shares one retry between 100 callers after a refused fetch (not backed off), as before', async () => {
    endpoint.answer = (n, response) => (n === 1 ? endpoint.json(response, 400, { error: 'invalid_client' }) : endpoint.issue(n, response));
    const outcomes = await concurrently(100);
    expect(endpoint.requests).toBe(2);
    expect(new Set(headers(outcomes))).toEqual(new Set(['Bearer upstream_at_2']));
    for (const error of failures(outcomes)) expect(error).toMatchObject({ status: 502, reason: 'upstream_token_status_400' });
    expect(deferred).toEqual([]);
  });

  it('does not back off a refusal (400 invalid_client): a configuration error, 502, asked again on the next call', async () => {
    endpoint.answer = (_n, response) => endpoint.json(response, 400, { error: 'invalid_client' });
    expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ status: 502, reason: 'upstream_token_status_400' })]);
    expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ status: 502, reason: 'upstream_token_status_400' })]);
    expect(endpoint.requests).toBe(2);
    expect(deferred).toEqual([]);
  });

  it('drops a token on a 401 only when it is the one the upstream rejected', async () => {
    const stale = await credentials.headerFor(sealed);
    expect(stale.value).toBe('Bearer upstream_at_1');
    // 20 calls sent the same token and all got a 401: each asks again with the refused one, as the proxy does.
    const refreshed = await Promise.all(
      Array.from({ length: 20 }, async () => {
        await Promise.resolve();
        return credentials.headerFor(sealed, stale);
      }),
    );
    expect(endpoint.requests).toBe(2);
    expect(new Set(refreshed.map((header) => header.value))).toEqual(new Set(['Bearer upstream_at_2']));
    // A late 401 for the old token does not drop the newer one.
    expect((await credentials.headerFor(sealed, stale)).value).toBe('Bearer upstream_at_2');
    expect(endpoint.requests).toBe(2);
    // A 401 for the current token does, once the upstream had accepted it (a revocation).
    credentials.accepted(sealed, refreshed[0]);
    expect((await credentials.headerFor(sealed, refreshed[0])).value).toBe('Bearer upstream_at_3');
    expect(endpoint.requests).toBe(3);
  });

  it('keeps a newer token that is still being fetched when a stale token is invalidated', async () => {
    const stale = await credentials.headerFor(sealed);
    const held: ServerResponse[] = [];
    endpoint.answer = (n, response) => (n === 2 ? held.push(response) : endpoint.issue(n, response));
    const fresh = credentials.headerFor(sealed, stale);
    await endpoint.received(2);
    const other = credentials.headerFor(sealed, stale);
    endpoint.issue(2, held[0]);
    expect((await fresh).value).toBe('Bearer upstream_at_2');
    expect((await other).value).toBe('Bearer upstream_at_2');
    expect(endpoint.requests).toBe(2);
  });

  it('refreshes an expired token once for 50 concurrent callers', async () => {
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
    const later = Date.now() + 3600_000;
    jest.spyOn(Date, 'now').mockReturnValue(later);
    const outcomes = await concurrently(50);
    expect(endpoint.requests).toBe(2);
    expect(failures(outcomes)).toEqual([]);
    expect(new Set(headers(outcomes))).toEqual(new Set(['Bearer upstream_at_2']));
  });

  it('shares one failed refresh of an expired token between 50 callers, and fetches again once the backoff is over', async () => {
    await credentials.headerFor(sealed);
    const later = Date.now() + 3600_000;
    jest.spyOn(Date, 'now').mockReturnValue(later);
    jest.spyOn(Math, 'random').mockReturnValue(0);
    endpoint.answer = (n, response) => (n === 2 ? endpoint.json(response, 500, {}) : endpoint.issue(n, response));
    const outcomes = await concurrently(50);
    expect(endpoint.requests).toBe(2);
    expect(headers(outcomes)).toEqual([]);
    for (const error of failures(outcomes)) expect(error).toMatchObject({ status: 503, retryAfterSeconds: 5 });
    expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ reason: 'upstream_token_backoff' })]);
    jest.spyOn(Date, 'now').mockReturnValue(later + 5_000);
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_3');
    expect(endpoint.requests).toBe(3);
  });

  it.each(['null', '[]', '"x"', '42'])('refuses a token endpoint answering JSON %s with 502, and keeps no failure', async (answer) => {
    endpoint.answer = (_n, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(answer);
    };
    const [outcome] = await concurrently(1);
    expect(outcome).toEqual({ error: expect.objectContaining({ status: 502, reason: 'upstream_token_status_200' }) });
    endpoint.answer = (n, response) => endpoint.issue(n, response);
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
  });

  it.each(['1e300', '"3600"', '86401'])('never reuses a token past a day, whatever expires_in says (%s)', async (expiresIn) => {
    endpoint.answer = (n, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(`{"access_token":"upstream_at_${n}","token_type":"Bearer","expires_in":${expiresIn}}`);
    };
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
    expect(endpoint.requests).toBe(1);
    jest.spyOn(Date, 'now').mockReturnValue(Date.now() + 24 * 3600_000 + 1000);
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
    expect(endpoint.requests).toBe(2);
  });

  it.each(['0', '1', '29', '"0"'])(
    'believes a lifetime under a minute (expires_in %s) to be a minute: 50 calls, one fetch; refetched once it is past',
    async (expiresIn) => {
      endpoint.answer = (n, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(`{"access_token":"upstream_at_${n}","token_type":"Bearer","expires_in":${expiresIn}}`);
      };
      const start = Date.now();
      expect(failures(await concurrently(25))).toEqual([]);
      for (let call = 0; call < 25; call += 1) expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
      // Reused for the minute believed, less the refresh margin (10 %)...
      jest.spyOn(Date, 'now').mockReturnValue(start + 50_000);
      expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
      expect(endpoint.requests).toBe(1);
      // ...but not the five minutes of an absent expires_in: the provider said it expires (almost) at once.
      jest.spyOn(Date, 'now').mockReturnValue(start + 60_000);
      expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
      expect(endpoint.requests).toBe(2);
    },
  );

  it('reuses a token for five minutes when the token endpoint gives no expires_in', async () => {
    endpoint.answer = (n, response) => endpoint.json(response, 200, { access_token: `upstream_at_${n}`, token_type: 'Bearer' });
    const start = Date.now();
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
    jest.spyOn(Date, 'now').mockReturnValue(start + 240_000);
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_1');
    jest.spyOn(Date, 'now').mockReturnValue(start + 300_000);
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
  });

  it.each(['-5', '"soon"', 'true', 'null', '1e400'])(
    'refuses an expires_in that is not a number of seconds (%s) with 502, as for connected accounts, and keeps no token',
    async (expiresIn) => {
      endpoint.answer = (n, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(`{"access_token":"upstream_at_${n}","token_type":"Bearer","expires_in":${expiresIn}}`);
      };
      const [outcome] = await concurrently(1);
      expect(outcome).toEqual({ error: expect.objectContaining({ status: 502, reason: 'upstream_token_invalid_expires_in' }) });
      expect(JSON.stringify(outcome)).not.toContain('upstream_at_1');
      endpoint.answer = (n, response) => endpoint.issue(n, response);
      expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
    },
  );

  it('refetches a token believed a minute as soon as the upstream refuses it (401), once for concurrent callers', async () => {
    endpoint.answer = (n, response) => endpoint.json(response, 200, { access_token: `upstream_at_${n}`, token_type: 'Bearer', expires_in: 0 });
    const stale = await credentials.headerFor(sealed);
    const refreshed = await Promise.all(
      Array.from({ length: 20 }, async () => {
        await Promise.resolve();
        return credentials.headerFor(sealed, stale);
      }),
    );
    expect(endpoint.requests).toBe(2);
    expect(new Set(refreshed.map((header) => header.value))).toEqual(new Set(['Bearer upstream_at_2']));
  });

  /** `count` calls started together, each refused with `rejected` by the upstream and asking again. */
  const refusedConcurrently = (count: number, rejected: CredentialHeader): Promise<Outcome[]> =>
    Promise.all(
      Array.from({ length: count }, () =>
        credentials.headerFor(sealed, rejected).then(
          (header): Outcome => ({ header }),
          (error: Error & { status?: number; reason?: string }): Outcome => {
            // As the proxy does with the answer a call gets.
            credentials.refused(error);
            return { error };
          },
        ),
      ),
    );

  it('an upstream refusing every token: one refetch per 30 s for 50 callers, the others 503 with Retry-After, nothing fetched', async () => {
    const start = Date.now();
    const first = await credentials.headerFor(sealed);
    // The first refusal is worth a refetch, shared by every caller it reached.
    const second = await refusedConcurrently(50, first);
    expect(new Set(headers(second))).toEqual(new Set(['Bearer upstream_at_2']));
    expect(endpoint.requests).toBe(2);
    // The new token, never accepted, is refused too: no token is fetched for 30 s.
    jest.spyOn(Date, 'now').mockReturnValue(start + 10_000);
    const refused = await refusedConcurrently(50, { name: 'authorization', value: 'Bearer upstream_at_2' });
    expect(headers(refused)).toEqual([]);
    for (const error of failures(refused)) {
      expect(error).toMatchObject({ status: 503, reason: 'upstream_token_refused' });
      expect((error as unknown as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThanOrEqual(19);
      expect((error as unknown as { retryAfterSeconds: number }).retryAfterSeconds).toBeLessThanOrEqual(21);
    }
    expect(endpoint.requests).toBe(2);
    // Calls that are not refused meanwhile keep using the cached token.
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
    // 30 s after the last refetch: one more, shared.
    jest.spyOn(Date, 'now').mockReturnValue(start + 31_000);
    const later = await refusedConcurrently(50, { name: 'authorization', value: 'Bearer upstream_at_2' });
    expect(new Set(headers(later))).toEqual(new Set(['Bearer upstream_at_3']));
    expect(endpoint.requests).toBe(3);
  });

  it('a token the upstream accepted is refetched at once when refused (a revocation), however recent the last refetch', async () => {
    const first = await credentials.headerFor(sealed);
    credentials.accepted(sealed, first);
    const second = headers(await refusedConcurrently(20, first));
    expect(new Set(second)).toEqual(new Set(['Bearer upstream_at_2']));
    credentials.accepted(sealed, { name: 'authorization', value: second[0] });
    const third = headers(await refusedConcurrently(20, { name: 'authorization', value: second[0] }));
    expect(new Set(third)).toEqual(new Set(['Bearer upstream_at_3']));
    expect(endpoint.requests).toBe(3);
    // Accepting an older token (a late answer) does not vouch for the current one.
    credentials.accepted(sealed, first);
    const refused = await refusedConcurrently(5, { name: 'authorization', value: third[0] });
    expect(failures(refused).map((error) => error.reason)).toEqual(new Array(5).fill('upstream_token_refused'));
    expect(endpoint.requests).toBe(3);
  });

  it.each([
    [503, '120', 120],
    [429, 'HTTP-date', 600],
    [503, '86400', 3600],
  ])("heeds the token endpoint's %d with Retry-After %s: one request for 100 callers, then none before it is over", async (status, value, seconds) => {
    const start = Date.now();
    const retryAfter = value === 'HTTP-date' ? new Date(start + 600_000).toUTCString() : value;
    endpoint.answer = (n, response) => {
      if (n > 1) return endpoint.issue(n, response);
      response.writeHead(status, { 'content-type': 'application/json', 'retry-after': retryAfter });
      response.end('{"error":"temporarily_unavailable"}');
    };
    const outcomes = await concurrently(100);
    expect(endpoint.requests).toBe(1);
    expect(headers(outcomes)).toEqual([]);
    for (const error of failures(outcomes)) {
      expect(error).toMatchObject({ status: 503, reason: 'upstream_token_retry_after' });
      expect((error as unknown as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThan(seconds - 3);
      expect((error as unknown as { retryAfterSeconds: number }).retryAfterSeconds).toBeLessThanOrEqual(seconds);
    }
    jest.spyOn(Date, 'now').mockReturnValue(start + (seconds - 5) * 1000);
    expect(failures(await concurrently(20)).map((error) => error.reason)).toEqual(new Array(20).fill('upstream_token_retry_after'));
    expect(endpoint.requests).toBe(1);
    jest.spyOn(Date, 'now').mockReturnValue(start + (seconds + 1) * 1000);
    expect(new Set(headers(await concurrently(20)))).toEqual(new Set(['Bearer upstream_at_2']));
    expect(endpoint.requests).toBe(2);
  });

  it.each(['soon', '-1', '1.5', '0', '2', 'Wed, 31 Nov 2100 00:00:00 GMT'])(
    'ignores a Retry-After that is no wait, or shorter than the backoff (%j): 503, the backoff alone applies',
    async (value) => {
      const start = Date.now();
      jest.spyOn(Math, 'random').mockReturnValue(0);
      endpoint.answer = (n, response) => {
        if (n > 1) return endpoint.issue(n, response);
        response.writeHead(503, { 'content-type': 'application/json', 'retry-after': value });
        response.end('{"error":"temporarily_unavailable"}');
      };
      const [outcome] = await concurrently(1);
      expect(outcome).toEqual({ error: expect.objectContaining({ status: 503, reason: 'upstream_token_status_503', retryAfterSeconds: 5 }) });
      expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ status: 503, reason: 'upstream_token_backoff' })]);
      expect(deferred).toEqual(['chat:backoff']);
      jest.spyOn(Date, 'now').mockReturnValue(start + 5_500);
      expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
    },
  );

  it('a Retry-After on another status (500) is not heeded: the backoff alone applies', async () => {
    const start = Date.now();
    jest.spyOn(Math, 'random').mockReturnValue(0);
    endpoint.answer = (n, response) => {
      if (n > 1) return endpoint.issue(n, response);
      response.writeHead(500, { 'content-type': 'application/json', 'retry-after': '120' });
      response.end('{}');
    };
    expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ status: 503, reason: 'upstream_token_status_500', retryAfterSeconds: 5 })]);
    jest.spyOn(Date, 'now').mockReturnValue(start + 5_500);
    expect((await credentials.headerFor(sealed)).value).toBe('Bearer upstream_at_2');
  });

  it("counts the calls refused while the token endpoint's own Retry-After lasts, apart from the backoff", async () => {
    endpoint.answer = (_n, response) => {
      response.writeHead(429, { 'content-type': 'application/json', 'retry-after': '60' });
      response.end('{"error":"slow_down"}');
    };
    expect(failures(await concurrently(1))).toEqual([expect.objectContaining({ status: 503, reason: 'upstream_token_retry_after', retryAfterSeconds: 60 })]);
    expect(failures(await concurrently(3)).map((error) => error.reason)).toEqual(new Array(3).fill('upstream_token_retry_after'));
    expect(deferred).toEqual(new Array(3).fill('chat:retry_after'));
    expect(endpoint.requests).toBe(1);
  });
});

describe('UpstreamCredentials: oauth2_authorization_code refusals', () => {
  const master = new MasterKey(randomBytes(32));
  const baseUrl = 'https://code.example';
  const credential = {
    type: 'oauth2_authorization_code' as const,
    authorization_url: 'https://code.example/oauth/authorize',
    token_url: 'https://code.example/oauth/token',
    client_id: 'writ',
    client_secret: CLIENT_SECRET,
    scopes: ['repo'],
  };
  const { sealed: bytes, fingerprint, type } = sealCredential(master, 'codehost', baseUrl, credential);
  const sealed: SealedCredential = {
    connectorId: 'codehost',
    baseUrl,
    type,
    sealed: bytes,
    fingerprint,
    user: { issuer: 'https://idp.example', subject: 'u1' },
  };

  it('counts a call refused for its refresh backoff where its refusal is final (refused), once however often it was checked', async () => {
    const counted: string[] = [];
    const accounts = {
      accessToken: () =>
        Promise.reject(new ConnectedAccountError('refresh_backoff', 'the upstream token endpoint of codehost was unavailable at the last refresh', 503, 4)),
    } as unknown as ConnectedAccounts;
    const credentials = new UpstreamCredentials(master, {} as Agent, accounts, undefined, (connectorId) => counted.push(connectorId));
    // Checked twice (on remembered, then on fresh state), as the proxy may: nothing counted yet.
    const errors = await Promise.all([
      credentials.headerFor(sealed).catch((error: unknown) => error),
      credentials.headerFor(sealed).catch((error: unknown) => error),
    ]);
    for (const error of errors) expect(error).toMatchObject({ status: 503, retryAfterSeconds: 4, reason: 'refresh_backoff' });
    expect(counted).toEqual([]);
    credentials.refused(errors[1]);
    expect(counted).toEqual(['codehost']);
  });

  it('does not count other refusals of a connected account (an outage of the provider, a broken connection)', async () => {
    const counted: string[] = [];
    const outcomes = [
      new ConnectedAccountError('upstream_unavailable', 'the upstream token endpoint is unavailable', 503, 5),
      new ConnectedAccountError('connection_broken', 'broken'),
    ];
    for (const refusal of outcomes) {
      const accounts = { accessToken: () => Promise.reject(refusal) } as unknown as ConnectedAccounts;
      const credentials = new UpstreamCredentials(master, {} as Agent, accounts, undefined, (connectorId) => counted.push(connectorId));
      credentials.refused(await credentials.headerFor(sealed).catch((error: unknown) => error));
    }
    expect(counted).toEqual([]);
  });
});
