import type { ArgumentsHost } from '@nestjs/common';
import { createLogger } from './logger';
import { WritExceptionFilter } from './http-exception.filter';

const pgError = (code: string, message: string) => Object.assign(new Error(message), { code, severity: 'FATAL' });

/** Runs the filter on `exception` and returns what it answered. */
function answer(exception: unknown): { status: number; headers: Record<string, string>; body: Record<string, unknown> } {
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
  new WritExceptionFilter(createLogger('silent', 'writ')).catch(exception, host);
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
