import { startTestServices, TestServices } from './support/test-services';

// A long window: a burst never straddles two windows, so the counts below are exact.
const THROTTLE = {
  WRIT_THROTTLE_WINDOW_SECONDS: '3600',
  WRIT_THROTTLE_SOURCE_FAILURES: '6',
  WRIT_THROTTLE_CLIENT_FAILURES: '6',
  WRIT_THROTTLE_AUDIT_EVENTS: '2',
};

/**
 * Connect links and callbacks are reachable without authentication: guessing them is
 * counted per source address with the OAuth endpoints' failures, audited one by one only up
 * to the window's cap, and answered 429 with Retry-After past the limit.
 */
describe('guessing connect links', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({ env: THROTTLE });
  });
  afterAll(async () => {
    await services.close();
  });

  it('limits and bounds the audit of refused links and states, fired in parallel', async () => {
    const attempts = await Promise.all(
      Array.from({ length: 10 }, (_, index) =>
        fetch(index % 2 === 0 ? `${services.issuer}/connect/guess-${index}` : `${services.issuer}/connect/callback?state=guess-${index}&code=x`, {
          redirect: 'manual',
        }),
      ),
    );
    const statuses = attempts.map((response) => response.status);
    expect(statuses.filter((status) => status === 400)).toHaveLength(6);
    expect(statuses.filter((status) => status === 429)).toHaveLength(4);
    for (const response of attempts.filter((answer) => answer.status === 429)) expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    const { rows } = await services.runtime.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events WHERE type IN ('connection.link_refused', 'connection.connect_failed')`,
    );
    expect(rows[0].n).toBe(2);
    // Also the user-facing endpoints: bad user tokens count toward the same limit.
    const me = await fetch(`${services.issuer}/v1/me/connections`, { headers: { authorization: 'Bearer not.a.token' } });
    expect(me.status).toBe(429);
  });
});
