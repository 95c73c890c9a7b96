import type { Socket } from 'node:net';
import { sourceAddress } from './failure-throttle';

const from = (remoteAddress: string | undefined, headers: Record<string, string> = {}) => sourceAddress({ socket: { remoteAddress } as Socket, headers });

describe('sourceAddress', () => {
  it('keeps IPv4 and unwraps IPv4-mapped IPv6', () => {
    expect(from('203.0.113.7')).toBe('203.0.113.7');
    expect(from('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it('counts IPv6 by /64, however the address is written', () => {
    expect(from('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(from('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(from('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(from('::1')).toBe('0:0:0:0::/64');
  });

  it("counts another site's browser requests apart from the address's own clients", () => {
    expect(from('203.0.113.7', { 'sec-fetch-site': 'cross-site' })).toBe('203.0.113.7#cross-site');
    expect(from('::ffff:203.0.113.7', { 'sec-fetch-site': 'Same-Site' })).toBe('203.0.113.7#cross-site');
    expect(from('2001:db8:1:2:aaaa::1', { 'sec-fetch-site': 'cross-site' })).toBe('2001:db8:1:2::/64#cross-site');
    // The console's own calls, a typed URL, and tools that send no such header: the address itself.
    expect(from('203.0.113.7', { 'sec-fetch-site': 'same-origin' })).toBe('203.0.113.7');
    expect(from('203.0.113.7', { 'sec-fetch-site': 'none' })).toBe('203.0.113.7');
    expect(from('203.0.113.7')).toBe('203.0.113.7');
  });

  it('names an unknown peer', () => {
    expect(from(undefined)).toBe('unknown');
  });
});
