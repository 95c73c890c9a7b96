import type { ArgumentsHost } from '@nestjs/common';
import type { Logger } from 'pino';
import { createLogger } from './logger';
import { WritExceptionFilter } from './http-exception.filter';
import { LogRateLimiter } from './log-rate-limiter';

const pgError = (code: string, message: string) => Object.assign(new Error(message), { code, severity: 'FATAL' });

/** Runs the filter on `exception` and returns what it answered. */
function answer(
  exception: unknown,
  filter = new WritExceptionFilter(createLogger('silent', 'writ')),
): { status: number; headers: Record<string, string>; body: Record<string, unknown> } {
  const result = { status: 0, headers: {} as Record<string, string>, body: {} as Record<string, unknown> };
  const response = {
    headersSent: false,
    setHeader: (name: string, value: string) => void (result.headers[name.toLowerCase()] = value),
    status(status: number) {
      result.status = status;
      return this;
    },
    json(body: Record<string, unknown>) {
      result.body = body;
      return this;
    },
  };
  const request = { path: '/x', method: 'GET', headers: {} };
  const host = { switchToHttp: () => ({ getResponse: () => response, getRequest: () => request }) } as unknown as ArgumentsHost;
  filter.catch(exception, host);
  return result;
}

describe('WritExceptionFilter: the database unavailable or in conflict is 503 with Retry-After, never 500', () => {
  it.each([
    ['idle_in_transaction_session_timeout (25P03)', pgError('25P03', 'terminating connection due to idle-in-transaction timeout')],
    ['idle_session_timeout (57P05)', pgError('57P05', 'terminating connection due to idle-session timeout')],
    ['a serialization failure (40001)', Object.assign(new Error('could not serialize access'), { code: '40001', severity: 'ERROR' })],
    ['a deadlock (40P01)', Object.assign(new Error('deadlock detected'), { code: '40P01', severity: 'ERROR' })],
    ['a terminated session (57P01)', pgError('57P01', 'terminating connection due to administrator command')],
  ])('%s', (_what, error) => {
    const { status, headers, body } = answer(error);
    expect(status).toBe(503);
    expect(headers['retry-after']).toMatch(/^\d+$/);
    expect(body).toMatchObject({ error: 'temporarily_unavailable' });
  });

  it('still answers 500 for an unknown error', () => {
    expect(answer(new Error('boom')).status).toBe(500);
  });
});

describe('WritExceptionFilter: "database unavailable" does not flood the log during an outage', () => {
  it('logs the first refusal at once, then at most one line per interval per kind, saying how many it left out', () => {
    const lines: { fields: Record<string, unknown>; message: string }[] = [];
    const logger = { warn: (fields: Record<string, unknown>, message: string) => lines.push({ fields, message }) } as unknown as Logger;
    let now = 5_000_000;
    const filter = new WritExceptionFilter(logger, new LogRateLimiter(10_000, () => now));
    const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    for (let i = 0; i < 1_000; i += 1) expect(answer(refused(), filter).status).toBe(503);
    expect(lines).toHaveLength(1);
    expect(lines[0].message).toBe('database unavailable: refusing (fail closed)');
    // Another kind of failure is not hidden behind the first.
    expect(answer(pgError('57P01', 'terminating connection due to administrator command'), filter).status).toBe(503);
    expect(lines).toHaveLength(2);
    now += 10_000;
    for (let i = 0; i < 10; i += 1) expect(answer(refused(), filter).status).toBe(503);
    expect(lines).toHaveLength(3);
    expect(lines[2].fields).toMatchObject({ suppressed: 999, err: { code: 'ECONNREFUSED' } });
    expect(lines[2].message).toContain('999 more refused');
  });

  it('shares one limit between the filters of one logger (Nest routes and direct routes)', () => {
    const lines: string[] = [];
    const logger = { warn: (_fields: unknown, message: string) => lines.push(message) } as unknown as Logger;
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    answer(refused, new WritExceptionFilter(logger));
    answer(refused, new WritExceptionFilter(logger));
    expect(lines).toHaveLength(1);
  });
});
