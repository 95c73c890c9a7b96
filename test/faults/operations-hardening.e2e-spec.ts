import { createAdminApp } from '../../apps/admin/src/admin.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { startTestServices, TestServices } from '../support/test-services';

jest.setTimeout(120_000);

describe('faults: operations hardening', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
    });
  });
  afterAll(async () => {
    await services?.close();
  });

  it('keeps connector ids guessed by unauthenticated callers out of the metrics labels', async () => {
    const guesses = Array.from({ length: 20 }, (_, n) => `guessed-connector-${n}`);
    const answers = await Promise.all(
      guesses.map((id) => fetch(`${services.gatewayUrl}/connectors/${id}/v1/things`, { headers: { authorization: 'Bearer not-a-token' } })),
    );
    for (const answer of answers) expect(answer.status).toBe(401);
    // The refusals were audited (each is a gateway.call event), so the metrics saw them.
    const { rows } = await services.runtime.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events WHERE type = 'gateway.call' AND connector_id LIKE 'guessed-connector-%'`,
    );
    expect(rows[0].n).toBe(guesses.length);
    const text = await (await fetch(`${services.adminUrl}/metrics`)).text();
    expect(text).not.toContain('guessed-connector');
    expect(text).toMatch(/writ_gateway_calls_total\{connector="other",operation="none",status="401"\} (\d+)/);
    expect(Number(/writ_gateway_calls_total\{connector="other",operation="none",status="401"\} (\d+)/.exec(text)![1])).toBeGreaterThanOrEqual(guesses.length);
  });
});
