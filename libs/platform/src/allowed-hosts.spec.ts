import { AllowedHostsConfig, parseHostName } from '@writ/config';
import { hostAllowed } from './allowed-hosts';

/** The loopback default (`WRIT_ALLOWED_HOSTS` unset, `WRIT_HOST` loopback), with the default issuer and gateway host. */
const LOOPBACK_DEFAULT: AllowedHostsConfig = { names: ['localhost'], namesWithPort: [], loopbackNames: true };

const allowed = (host: string): boolean | undefined => {
  const parsed = parseHostName(host);
  return parsed && hostAllowed(LOOPBACK_DEFAULT, parsed);
};

/**
 * The loopback default accepts IP literals because a DNS-rebinding page's browser sends the page's
 * own DNS name. That holds only if no DNS name is read here as an IP literal: the check reads a
 * `Host` with the URL standard's host parser, as the browser parsed the page's URL, so a name the
 * browser resolved through DNS is a name here too, and a host the browser read as an IPv4 address
 * (`0x7f.1`, `2130706433`) was never looked up in DNS.
 */
describe('hostAllowed, loopback default', () => {
  it('accepts the numeric IPv4 forms a browser itself reads as addresses (no DNS lookup, so no rebinding)', () => {
    for (const host of ['0x7f.1', '2130706433', '017700000001', '0x7f000001', '127.1', '127.0.0.1.', '[::ffff:127.0.0.1]', '[0:0::1]:4002']) {
      expect({ host, allowed: allowed(host) }).toEqual({ host, allowed: true });
    }
  });

  it('refuses every DNS name, however much of it looks like an address', () => {
    for (const host of [
      '127.0.0.1.nip.io',
      '1.2.3.4.attacker.example',
      '0x7f.1.attacker.example',
      '7f000001.rbndr.us',
      '2130706433.attacker.example:4002',
      'localhost.attacker.example',
      'attacker.example.localhost.attacker.example',
      'xn--localhost-.example',
      '123.example',
      '0x7f.example',
    ]) {
      expect({ host, allowed: allowed(host) }).toEqual({ host, allowed: false });
    }
  });

  it('finds no host in a name ending in a number that is no IPv4 address (a browser refuses its URL too)', () => {
    for (const host of ['attacker.123', '1.2.3.4.5', '256.0.0.1', 'attacker.0x', '0x7f.1.2.3.4', 'attacker.09']) {
      expect({ host, parsed: parseHostName(host) }).toEqual({ host, parsed: undefined });
    }
  });
});
