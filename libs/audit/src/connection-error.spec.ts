import { QueryFailedError } from 'typeorm';
import { isConnectionError, isTransientError } from './audit.service';

const pgError = (code: string, message = 'x') => Object.assign(new Error(message), { code, severity: 'ERROR' });

describe('isConnectionError', () => {
  it.each([
    ['pool checkout deadline', new Error('timeout exceeded when trying to connect')],
    ['connect deadline', new Error('Connection terminated due to connection timeout')],
    ['client-side query deadline (frozen server)', new Error('Query read timeout')],
    ['pool already closed', new Error('Cannot use a pool after calling end on the pool')],
    ['statement_timeout', pgError('57014', 'canceling statement due to statement timeout')],
    ['lock_timeout', pgError('55P03', 'canceling statement due to lock timeout')],
    ['too many connections', pgError('53300', 'sorry, too many clients already')],
    ['shutting down', pgError('57P01', 'terminating connection due to administrator command')],
    ['cannot connect now', pgError('57P03', 'the database system is starting up')],
    ['idle_in_transaction_session_timeout', pgError('25P03', 'terminating connection due to idle-in-transaction timeout')],
    ['idle_session_timeout', pgError('57P05', 'terminating connection due to idle-session timeout')],
    ['a read-only database (standby, default_transaction_read_only)', pgError('25006', 'cannot execute INSERT in a read-only transaction')],
    ['connection failure', pgError('08006')],
    ['refused', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })],
  ])('recognises %s as unavailability', (_what, error) => {
    expect(isConnectionError(error)).toBe(true);
  });

  it.each([
    ['a unique violation', pgError('23505')],
    ['a syntax error', pgError('42601')],
    ['a data exception', pgError('22P02')],
    ['a plain error', new Error('boom')],
    ['a non-error', 'x'],
  ])('does not take %s for unavailability', (_what, error) => {
    expect(isConnectionError(error)).toBe(false);
  });

  // Admin reads go through TypeORM repositories: a failed query reaches the filter as a
  // QueryFailedError, which copies the driver's code and message; a checkout failure is the
  // pool's own error, unwrapped.
  it.each([
    ['statement_timeout', pgError('57014', 'canceling statement due to statement timeout'), true],
    ['client-side query deadline', new Error('Query read timeout'), true],
    ['connection failure', pgError('08006'), true],
    ['a syntax error', pgError('42601'), false],
  ])('sees through TypeORM wrapping %s', (_what, driverError, expected) => {
    expect(isConnectionError(new QueryFailedError('SELECT 1', [], driverError))).toBe(expected);
  });
});

describe('isTransientError', () => {
  it.each([
    ['a serialization failure', pgError('40001', 'could not serialize access due to concurrent update')],
    ['a deadlock', pgError('40P01', 'deadlock detected')],
  ])('recognises %s (a retry may succeed)', (_what, error) => {
    expect(isTransientError(error)).toBe(true);
    expect(isTransientError(new QueryFailedError('UPDATE x', [], error))).toBe(true);
  });

  it.each([
    ['a unique violation', pgError('23505')],
    ['a foreign key violation', pgError('23503')],
    ['a connection failure', pgError('08006')],
    ['a plain error', new Error('boom')],
    ['a non-error', undefined],
  ])('does not take %s for a transient conflict', (_what, error) => {
    expect(isTransientError(error)).toBe(false);
  });
});
