import { SpendForecast } from './spend-forecast';

describe('SpendForecast', () => {
  it('expects a fresh credential at one use, then counts on from what its spends left', () => {
    const forecast = new SpendForecast();
    expect(forecast.next('a')).toBe(1);
    forecast.settle('a', 1);
    expect(forecast.next('a')).toBe(2);
    forecast.settle('a', 5); // another instance spent three meanwhile
    expect(forecast.next('a')).toBe(6);
  });

  it('counts spends in flight, and forgets them once settled, also when they spent nothing', () => {
    const forecast = new SpendForecast();
    expect([forecast.next('a'), forecast.next('a'), forecast.next('a')]).toEqual([1, 2, 3]);
    forecast.settle('a', 1);
    forecast.settle('a', undefined);
    forecast.settle('a', 2);
    expect(forecast.next('a')).toBe(3);
  });

  it('never goes back on a lower count reported late', () => {
    const forecast = new SpendForecast();
    forecast.next('a');
    forecast.next('a');
    forecast.settle('a', 2);
    forecast.settle('a', 1);
    expect(forecast.next('a')).toBe(3);
  });

  it('remembers a bounded number of credentials, forgetting the least recently spent', () => {
    const forecast = new SpendForecast(2);
    for (const jti of ['a', 'b', 'c']) {
      forecast.next(jti);
      forecast.settle(jti, 4);
    }
    expect(forecast.next('a')).toBe(1); // forgotten: expected fresh
    expect(forecast.next('c')).toBe(5);
  });
});
