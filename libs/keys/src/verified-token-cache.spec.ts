import type { JWTVerifyResult } from 'jose';
import { VerifiedTokenCache } from './verified-token-cache';

const result = (exp: number, extra: Record<string, unknown> = {}): JWTVerifyResult => ({
  payload: { exp, task_id: 't1', details: [{ connector: 'payments' }], ...extra },
  protectedHeader: { alg: 'ES256', kid: 'k1' },
});

describe('VerifiedTokenCache', () => {
  const known = () => true;

  it('returns a remembered verification until the token expires, then forgets it', () => {
    const cache = new VerifiedTokenCache();
    cache.set('a', result(1000));
    expect(cache.get('a', 999, 0, known)?.payload.task_id).toBe('t1');
    expect(cache.get('a', 1000, 0, known)).toBeUndefined();
    expect(cache.size).toBe(0);
    expect(cache.get('b', 10, 0, known)).toBeUndefined();
  });

  it('honours the clock tolerance and a not-yet-valid nbf', () => {
    const cache = new VerifiedTokenCache();
    cache.set('a', result(1000, { nbf: 500 }));
    expect(cache.get('a', 1004, 5, known)).toBeDefined();
    expect(cache.get('a', 490, 0, known)).toBeUndefined();
    expect(cache.get('a', 600, 0, known)).toBeDefined();
  });

  it('forgets a token whose signing key is no longer the issuer’s', () => {
    const cache = new VerifiedTokenCache();
    cache.set('a', result(1000));
    expect(cache.get('a', 10, 0, (kid) => kid !== 'k1')).toBeUndefined();
    expect(cache.get('a', 10, 0, known)).toBeUndefined();
  });

  it('shares a frozen result: a caller cannot change what the next one reads', () => {
    const cache = new VerifiedTokenCache();
    cache.set('a', result(1000));
    const first = cache.get('a', 10, 0, known)!;
    expect(() => {
      (first.payload as Record<string, unknown>).task_id = 't2';
    }).toThrow(TypeError);
    expect(() => (first.payload.details as Array<Record<string, unknown>>).push({})).toThrow(TypeError);
    expect(cache.get('a', 10, 0, known)?.payload.task_id).toBe('t1');
  });

  it('keeps at most its bound, dropping the oldest, and never a token without exp or kid', () => {
    const cache = new VerifiedTokenCache(2);
    cache.set('a', result(1000));
    cache.set('b', result(1000));
    cache.set('c', result(1000));
    expect(cache.get('a', 10, 0, known)).toBeUndefined();
    expect(cache.get('c', 10, 0, known)).toBeDefined();
    cache.set('d', { payload: {}, protectedHeader: { alg: 'ES256', kid: 'k1' } });
    expect(cache.get('d', 10, 0, known)).toBeUndefined();
  });
});
