import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JSONWebKeySet } from 'jose';
import { InvalidClientError } from '../errors/oauth-errors';
import { parseFormBody } from '../params/parse-form-body';
import { authenticateClientAssertion } from './authenticate-client-assertion';
import { CLIENT_ASSERTION_TYPE_JWT_BEARER } from './client-assertion.constants';
import { clientAuthenticationFailed } from './client-auth-failure';
import type { JtiStore } from './jti-store.interface';

const ISSUER = 'http://localhost:4000';
const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_S = NOW.getTime() / 1000;

/** In-memory stand-in for the PostgreSQL store, recording calls. */
class MemoryJtiStore implements JtiStore {
  readonly seen = new Map<string, Date>();
  async consume(clientId: string, jti: string, expiresAt: Date): Promise<boolean> {
    const key = `${clientId}\u0000${jti}`;
    if (this.seen.has(key)) return false;
    this.seen.set(key, expiresAt);
    return true;
  }
}

let privateKey: CryptoKey;
let jwks: JSONWebKeySet;

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  privateKey = pair.privateKey;
  jwks = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1' }] };
});

async function assertionFor(clientId: string, jti: string, aud = ISSUER): Promise<string> {
  return new SignJWT({ jti })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(aud)
    .setIssuedAt(NOW_S)
    .setExpirationTime(NOW_S + 60)
    .sign(privateKey);
}

function params(assertion: string) {
  return parseFormBody(
    new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: CLIENT_ASSERTION_TYPE_JWT_BEARER,
      client_assertion: assertion,
    }).toString(),
  );
}

async function reasonOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof InvalidClientError) return error.reason;
    throw error;
  }
  throw new Error('expected invalid_client');
}

describe('authenticateClientAssertion', () => {
  it('authenticates once and refuses the replay of the same assertion', async () => {
    const store = new MemoryJtiStore();
    const assertion = await assertionFor('agent_1', 'jti-1');
    const options = { issuer: ISSUER, loadJwks: async () => jwks, jtiStore: store, now: NOW };
    const verified = await authenticateClientAssertion({ ...options, params: params(assertion) });
    expect(verified).toMatchObject({ clientId: 'agent_1', jti: 'jti-1', kid: 'k1', alg: 'ES256' });
    expect(await reasonOf(authenticateClientAssertion({ ...options, params: params(assertion) }))).toBe('assertion_replay');
  });

  it('keeps the jti until exp plus the clock tolerance', async () => {
    const store = new MemoryJtiStore();
    await authenticateClientAssertion({
      params: params(await assertionFor('agent_1', 'jti-2')),
      issuer: ISSUER,
      loadJwks: async () => jwks,
      jtiStore: store,
      now: NOW,
    });
    expect(store.seen.get('agent_1\u0000jti-2')).toEqual(new Date((NOW_S + 60 + 30) * 1000));
  });

  it('scopes jtis per client', async () => {
    const store = new MemoryJtiStore();
    const common = { issuer: ISSUER, loadJwks: async () => jwks, jtiStore: store, now: NOW };
    await authenticateClientAssertion({ ...common, params: params(await assertionFor('agent_1', 'same')) });
    await expect(authenticateClientAssertion({ ...common, params: params(await assertionFor('agent_2', 'same')) })).resolves.toMatchObject({
      clientId: 'agent_2',
    });
  });

  it('does not consume the jti of an assertion that fails verification', async () => {
    const store = new MemoryJtiStore();
    const consume = jest.spyOn(store, 'consume');
    const bad = await assertionFor('agent_1', 'jti-3', `${ISSUER}/oauth2/token`);
    expect(await reasonOf(authenticateClientAssertion({ params: params(bad), issuer: ISSUER, loadJwks: async () => jwks, jtiStore: store, now: NOW }))).toBe(
      'assertion_audience',
    );
    expect(consume).not.toHaveBeenCalled();
  });

  it('reports an unknown client without verifying anything', async () => {
    const store = new MemoryJtiStore();
    const loadJwks = jest.fn(async () => undefined);
    const error = authenticateClientAssertion({
      params: params(await assertionFor('ghost', 'jti-4')),
      issuer: ISSUER,
      loadJwks,
      jtiStore: store,
      now: NOW,
    });
    expect(await reasonOf(error)).toBe('client_unknown');
    expect(loadJwks).toHaveBeenCalledWith('ghost');
    expect(store.seen.size).toBe(0);
  });

  it('lets the loader report a suspended client', async () => {
    expect(
      await reasonOf(
        authenticateClientAssertion({
          params: params(await assertionFor('agent_1', 'jti-5')),
          issuer: ISSUER,
          loadJwks: async () => {
            throw clientAuthenticationFailed('client_inactive');
          },
          jtiStore: new MemoryJtiStore(),
          now: NOW,
        }),
      ),
    ).toBe('client_inactive');
  });

  it('fails closed when the jti store is unavailable', async () => {
    const down: JtiStore = { consume: async () => Promise.reject(new Error('connection refused')) };
    await expect(
      authenticateClientAssertion({
        params: params(await assertionFor('agent_1', 'jti-6')),
        issuer: ISSUER,
        loadJwks: async () => jwks,
        jtiStore: down,
        now: NOW,
      }),
    ).rejects.toThrow('connection refused');
  });
});
