import { ConnectedAccounts } from '@writ/accounts';
import { seedConnector, setConnectorCredential } from './seed';
import type { TestServices } from './test-services';

/**
 * A user's browser connecting `connectorId` for `subject` (of `https://idp.example`): a fresh
 * connect link (issued by the library, as the links endpoint does), continued on its page (a
 * same-origin `POST`), sent on to the provider. Answers where the provider was asked to
 * authorize, the callback as the provider would call it back (code `code-<subject>` and the
 * state), and the flow's cookie.
 */
export async function startConnecting(
  services: TestServices,
  subject: string,
  connectorId = 'codehost',
): Promise<{ authorize: URL; callback: URL; cookie: string }> {
  const accounts = services.apps[0].get(ConnectedAccounts, { strict: false });
  const link = await accounts.createLink(connectorId, { issuer: 'https://idp.example', subject }, { type: 'system', id: 'test' });
  const opened = await fetch(link.url, { method: 'POST', redirect: 'manual', headers: { origin: new URL(services.issuer).origin } });
  if (opened.status !== 303) throw new Error(`the connect link's page answered ${opened.status}`);
  const authorize = new URL(opened.headers.get('location')!);
  const callback = new URL(`${services.issuer}/connect/callback`);
  callback.searchParams.set('code', `code-${subject}`);
  callback.searchParams.set('state', authorize.searchParams.get('state')!);
  return { authorize, callback, cookie: opened.headers.getSetCookie()[0].split(';')[0] };
}

/**
 * Registers the `codehost` connector (one read operation) in front of `providerUrl`, with an
 * authorization-code credential for that provider (its `/authorize` and `/token`, no `issuer`).
 */
export async function seedCodehost(services: TestServices, providerUrl: string, clientSecret: string): Promise<void> {
  const { pool, masterKey } = services.runtime;
  await seedConnector(pool, 'codehost', [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }], providerUrl);
  await setConnectorCredential(pool, masterKey, 'codehost', {
    type: 'oauth2_authorization_code',
    authorization_url: `${providerUrl}/authorize`,
    token_url: `${providerUrl}/token`,
    client_id: 'writ-upstream',
    client_secret: clientSecret,
    scopes: ['repo:read'],
  });
}
