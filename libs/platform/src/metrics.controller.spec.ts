import type { Request, Response } from 'express';
import { bearerMatches, MetricsController } from './metrics.controller';
import type { Runtime } from './runtime';

function response() {
  const sent: { status?: number; headers: Record<string, string>; body?: unknown } = { headers: {} };
  const res = {
    setHeader: (name: string, value: string) => (sent.headers[name.toLowerCase()] = value),
    status: (status: number) => {
      sent.status = status;
      return res;
    },
    json: (body: unknown) => (sent.body = body),
    send: (body: unknown) => (sent.body = body),
  };
  return { res: res as unknown as Response, sent };
}

describe('MetricsController', () => {
  const runtime = (render: () => Promise<{ contentType: string; body: string }>, metricsToken?: string) =>
    ({ config: { http: { metricsToken } }, metrics: { render } }) as unknown as Runtime;
  const req = (authorization?: string) => ({ headers: authorization ? { authorization } : {} }) as Request;

  it('answers 503 with Retry-After, not 500, when the metrics cannot be gathered (a worker did not answer)', async () => {
    const { res, sent } = response();
    await new MetricsController(runtime(() => Promise.reject(new Error('cluster metrics timed out')))).scrape(req(), res);
    expect(sent).toEqual({ status: 503, headers: { 'retry-after': '5' }, body: expect.objectContaining({ error: 'temporarily_unavailable' }) });
  });

  it('serves the text, and checks the bearer token only when one is configured', async () => {
    const render = () => Promise.resolve({ contentType: 'text/plain', body: 'writ_x 1' });
    const open = response();
    await new MetricsController(runtime(render)).scrape(req(), open.res);
    expect(open.sent).toMatchObject({ status: 200, body: 'writ_x 1' });
    const token = 't'.repeat(32);
    const refused = response();
    await new MetricsController(runtime(render, token)).scrape(req(`Bearer ${token}x`), refused.res);
    expect(refused.sent.status).toBe(401);
    expect(bearerMatches(`bearer ${token}`, token)).toBe(true);
    expect(bearerMatches(`Bearer`, token)).toBe(false);
    expect(bearerMatches(undefined, token)).toBe(false);
  });
});
