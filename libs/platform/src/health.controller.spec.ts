import { databaseFailureReason } from './health.controller';

describe('databaseFailureReason', () => {
  it('tells a prober a fixed phrase, never the host, login or database the driver names', () => {
    const cases: Array<[unknown, string]> = [
      [Object.assign(new Error('connect ECONNREFUSED 10.0.3.7:5432'), { code: 'ECONNREFUSED' }), 'unreachable'],
      [Object.assign(new Error('getaddrinfo ENOTFOUND db.internal'), { code: 'ENOTFOUND' }), 'unreachable'],
      [Object.assign(new Error('password authentication failed for user "writ_app"'), { code: '28P01' }), 'the login was refused'],
      [new Error('timeout exceeded when trying to connect'), 'no connection available in time'],
      [new Error('Connection terminated unexpectedly'), 'the connection was lost'],
      [Object.assign(new Error('the database system is starting up'), { code: '57P03' }), 'starting up or shutting down'],
      [Object.assign(new Error('database "writ_prod" is not currently accepting connections'), { code: '55000' }), 'error'],
      ['a string', 'error'],
      [undefined, 'error'],
    ];
    for (const [error, reason] of cases) expect(databaseFailureReason(error)).toBe(reason);
  });
});
