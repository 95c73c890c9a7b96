import { importJWK } from 'jose';
import * as oauth from 'oauth4webapi';
import { type Dispatcher, fetch as undiciFetch, type Response as UndiciResponse } from 'undici';
import type { OAuth2AuthorizationCode } from '@writ/connectors';
import { believedTokenLifetime, privateKeyJwtAlg, UPSTREAM_ADDRESS_REFUSED, upstreamRetryAfter } from '@writ/connectors';
import { readBounded } from './read-bounded';

/** Tokens an upstream token endpoint returned. */
export interface UpstreamTokenSet {
  accessToken: string;
  /** Absent when the upstream issued none (or, on refresh, kept the old one: no rotation). */
  refreshToken?: string;
  expiresAt: Date | null;
  /** The granted scopes (the response's `scope`, or what was asked for when it says nothing). */
  scopes: string[];
}

/**
 * Why an upstream OAuth step failed, safe to store, audit and show: the upstream's RFC 6749
 * error code and description (never a token), or a transport reason.
 */
export class UpstreamOAuthError extends Error {
  constructor(
    /** `invalid_grant`, `upstream_unreachable`, `upstream_address_refused`, `invalid_response`... */
    readonly code: string,
    message: string,
    /** True when the upstream itself refused (the grant is unusable), false for transport trouble. */
    readonly refused: boolean,
    /** The seconds the upstream asked to wait (`Retry-After` on a `429` or `503`, capped): never asked again sooner. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'UpstreamOAuthError';
  }
}

const TIMEOUT_MS = 10_000;
/**
 * Largest answer read from an upstream OAuth endpoint, counted after decompression (as for
 * client credentials): a bigger one, or a gzip bomb, is refused before it fills the memory.
 */
export const MAX_UPSTREAM_OAUTH_RESPONSE_BYTES = 64 * 1024;

/**
 * Writ's side of an upstream authorization-code grant, with `oauth4webapi`: the authorization
 * URL (PKCE S256, `state`), the code exchange, refresh and RFC 7009 revocation. Every request
 * goes through the gateway's guarded dispatcher (`WRIT_UPSTREAM_ALLOWED_NETWORKS`, checked on
 * the address connected to; redirects never followed).
 */
export class UpstreamOAuthClient {
  constructor(private readonly dispatcher: Dispatcher) {}

  /** The provider's authorization URL for one connect attempt. */
  async authorizationUrl(credential: OAuth2AuthorizationCode, input: { redirectUri: string; state: string; codeVerifier: string }): Promise<string> {
    const url = new URL(credential.authorization_url);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', credential.client_id);
    url.searchParams.set('redirect_uri', input.redirectUri);
    if (credential.scopes.length > 0) url.searchParams.set('scope', credential.scopes.join(' '));
    url.searchParams.set('state', input.state);
    url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(input.codeVerifier));
    url.searchParams.set('code_challenge_method', 'S256');
    return url.href;
  }

  /** Checks the callback (`state`, RFC 9207 `iss` when the issuer is known, no `error`) and redeems the code. */
  async exchangeCode(
    credential: OAuth2AuthorizationCode,
    input: { callbackUrl: URL; redirectUri: string; state: string; codeVerifier: string },
  ): Promise<UpstreamTokenSet> {
    const as = this.server(credential);
    const callback = new URL(input.callbackUrl.href);
    if (!credential.issuer) {
      // Without a configured issuer `iss` cannot be checked exactly; but one that names another
      // provider than the one the user was sent to is a mix-up (RFC 9700 section 4.4): the code
      // is another provider's, and must not go to this connector's token endpoint with the PKCE
      // verifier. An issuer is on its authorization endpoint's origin (else: set `issuer`).
      const iss = callback.searchParams.getAll('iss');
      if (iss.length > 0 && (iss.length > 1 || originOf(iss[0]) !== new URL(credential.authorization_url).origin)) {
        throw new UpstreamOAuthError(
          'invalid_response',
          "the authorization response names another issuer (iss) than the connector's provider: set the connector's issuer if it is its own",
          true,
        );
      }
      callback.searchParams.delete('iss');
    }
    const sent = sentSecrets(credential);
    return this.run(credential, sent, async () => {
      const params = oauth.validateAuthResponse(as, this.client(credential), callback, input.state);
      const response = await oauth.authorizationCodeGrantRequest(
        as,
        this.client(credential),
        await this.auth(credential),
        params,
        input.redirectUri,
        input.codeVerifier,
        this.options(sent),
      );
      return oauth.processAuthorizationCodeResponse(as, this.client(credential), response);
    });
  }

  /** Redeems a refresh token; the result's `refreshToken` is the rotated one when the upstream rotated it. */
  async refresh(credential: OAuth2AuthorizationCode, refreshToken: string, grantedScopes: string[]): Promise<UpstreamTokenSet> {
    const as = this.server(credential);
    const sent = sentSecrets(credential);
    const set = await this.run(
      credential,
      sent,
      async () => {
        const response = await oauth.refreshTokenGrantRequest(as, this.client(credential), await this.auth(credential), refreshToken, this.options(sent));
        return oauth.processRefreshTokenResponse(as, this.client(credential), response);
      },
      grantedScopes,
    );
    return set.scopes.length > 0 ? set : { ...set, scopes: grantedScopes };
  }

  /** RFC 7009: revokes a token at the upstream (the refresh token revokes the grant). */
  async revoke(credential: OAuth2AuthorizationCode, token: string, hint: 'refresh_token' | 'access_token'): Promise<void> {
    if (!credential.revocation_url) throw new UpstreamOAuthError('no_revocation_url', 'the connector has no revocation_url', false);
    const as = this.server(credential);
    const sent = sentSecrets(credential);
    await this.run(credential, sent, async () => {
      const response = await oauth.revocationRequest(as, this.client(credential), await this.auth(credential), token, {
        ...this.options(sent),
        additionalParameters: { token_type_hint: hint },
      });
      await oauth.processRevocationResponse(response);
      return undefined;
    });
  }

  /**
   * Runs one upstream step and maps its token response. `requestedScopes` are the scopes the
   * request stands for, believed when the answer has no `scope` (RFC 6749 section 5.1: then the
   * same as requested): what the connector asks for on a code exchange, but on a refresh (which
   * asks for no scope, i.e. the original grant's, section 6) what the user granted at connect.
   * `sent` gathers the secrets the step sent (see {@link sentSecrets}): an error that echoes one is
   * described without the upstream's words.
   */
  private async run<T>(
    credential: OAuth2AuthorizationCode,
    sent: string[],
    step: () => Promise<T>,
    requestedScopes?: string[],
  ): Promise<T extends oauth.TokenEndpointResponse ? UpstreamTokenSet : T>;
  private async run(credential: OAuth2AuthorizationCode, sent: string[], step: () => Promise<unknown>, requestedScopes = credential.scopes): Promise<unknown> {
    let result: unknown;
    try {
      result = await step();
    } catch (error) {
      throw describe(error, sent);
    }
    if (result && typeof result === 'object' && 'access_token' in result) {
      const tokens = result as oauth.TokenEndpointResponse;
      if (typeof tokens.token_type !== 'string' || tokens.token_type.toLowerCase() !== 'bearer') {
        throw new UpstreamOAuthError('invalid_response', 'the upstream issued a token that is not a Bearer token', true);
      }
      return {
        accessToken: tokens.access_token,
        ...(typeof tokens.refresh_token === 'string' ? { refreshToken: tokens.refresh_token } : {}),
        // Bounded both ways (believedTokenLifetime): under a minute would make every call a
        // refresh; over a day an invalid date, or a token kept for ever. oauth4webapi has already
        // refused a negative or non-numeric `expires_in` (a numeric string is read as its number).
        expiresAt: typeof tokens.expires_in === 'number' ? new Date(Date.now() + believedTokenLifetime(tokens.expires_in) * 1000) : null,
        scopes: typeof tokens.scope === 'string' ? tokens.scope.split(' ').filter(Boolean) : requestedScopes,
      } satisfies UpstreamTokenSet;
    }
    return result;
  }

  private server(credential: OAuth2AuthorizationCode): oauth.AuthorizationServer {
    return {
      issuer: credential.issuer ?? new URL(credential.token_url).origin,
      authorization_endpoint: credential.authorization_url,
      token_endpoint: credential.token_url,
      ...(credential.revocation_url ? { revocation_endpoint: credential.revocation_url } : {}),
      ...(credential.issuer ? { authorization_response_iss_parameter_supported: true } : {}),
    };
  }

  private client(credential: OAuth2AuthorizationCode): oauth.Client {
    return { client_id: credential.client_id };
  }

  private async auth(credential: OAuth2AuthorizationCode): Promise<oauth.ClientAuth> {
    if (credential.private_key_jwt) {
      const { jwk } = credential.private_key_jwt;
      const key = await importJWK(jwk as Parameters<typeof importJWK>[0], privateKeyJwtAlg(jwk));
      // RFC 7523 client assertion, `aud` = the provider's issuer (set `issuer` on the credential).
      return oauth.PrivateKeyJwt({ key: key as oauth.CryptoKey, ...(typeof jwk.kid === 'string' ? { kid: jwk.kid } : {}) });
    }
    return oauth.ClientSecretBasic(credential.client_secret ?? '');
  }

  /** Options of one upstream request; what it sends that is secret is added to `sent`. */
  private options(sent: string[]): { [oauth.customFetch]: typeof fetch; [oauth.allowInsecureRequests]: true; signal: AbortSignal } {
    const guarded = (async (url: string, init: RequestInit) => {
      noteSentSecrets(init, sent);
      return bounded(await undiciFetch(url, { ...(init as object), dispatcher: this.dispatcher, redirect: 'manual' }));
    }) as unknown as typeof fetch;
    // http token endpoints are allowed as they are for client credentials; where they may be is WRIT_UPSTREAM_ALLOWED_NETWORKS's call.
    return { [oauth.customFetch]: guarded, [oauth.allowInsecureRequests]: true, signal: AbortSignal.timeout(TIMEOUT_MS) };
  }
}

/** The origin of an issuer identifier, or `null` when it is not a URL. */
function originOf(issuer: string): string | null {
  try {
    return new URL(issuer).origin;
  } catch {
    return null;
  }
}

/**
 * The upstream's answer read whole, up to {@link MAX_UPSTREAM_OAUTH_RESPONSE_BYTES} after
 * decompression (fetch inflates `Content-Encoding` as it is read, so reading stops as soon as
 * the limit is passed), then handed to oauth4webapi as a fresh response. A bigger answer is an
 * unacceptable one; from an endpoint answering `5xx` or `429`, its outage.
 */
async function bounded(response: UndiciResponse): Promise<Response> {
  const read = await readBounded(response.body as AsyncIterable<Uint8Array> | null, MAX_UPSTREAM_OAUTH_RESPONSE_BYTES);
  if (!read) {
    if (response.status >= 500 || response.status === 429) {
      throw new UpstreamOAuthError(
        'upstream_unavailable',
        `the upstream OAuth endpoint answered ${response.status}`,
        false,
        upstreamRetryAfter(response.status, response.headers.get('retry-after')),
      );
    }
    throw new UpstreamOAuthError(
      'invalid_response',
      `the upstream's answer is not acceptable: it is more than ${MAX_UPSTREAM_OAUTH_RESPONSE_BYTES} bytes`,
      true,
    );
  }
  // A status without a body (204, 304) cannot be given one, even an empty one.
  const body = [101, 204, 205, 304].includes(response.status) ? null : read;
  // The body is inflated already: its encoding and length headers describe the bytes on the wire.
  const headers = new Headers(response.headers);
  headers.delete('content-encoding');
  headers.delete('content-length');
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}

/**
 * RFC 6749 error codes that say the provider itself is in trouble (section 4.1.2.1:
 * `server_error`, `temporarily_unavailable`), whatever the status: never a refusal of the
 * grant (which would mark a user's connection broken for good).
 */
const OUTAGE_CODES: ReadonlySet<string> = new Set(['server_error', 'temporarily_unavailable']);

/** An RFC 6749 `error` value (section 4.1.2.1, `1*NQSCHAR`), at most 64 characters. */
const AUTHORIZATION_ERROR_CODE = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/;

/** Form parameters of an upstream OAuth request whose values are secrets. */
const SECRET_PARAMETERS = ['code', 'code_verifier', 'refresh_token', 'token', 'client_secret', 'client_assertion'];

/** The secrets every request of `credential` may send (its client secret), to which each request adds its own. */
function sentSecrets(credential: OAuth2AuthorizationCode): string[] {
  return credential.client_secret ? [credential.client_secret] : [];
}

/** Adds to `sent` the secrets of one request: the code, PKCE verifier, refresh token, client assertion, `Authorization`. */
function noteSentSecrets(init: RequestInit, sent: string[]): void {
  const body = init.body instanceof URLSearchParams ? init.body : typeof init.body === 'string' ? new URLSearchParams(init.body) : undefined;
  for (const name of SECRET_PARAMETERS) for (const value of body?.getAll(name) ?? []) sent.push(value);
  const authorization = new Headers(init.headers).get('authorization');
  const credentials = authorization?.replace(/^\S+\s+/, '');
  if (!credentials) return;
  sent.push(credentials);
  // Basic: the id and secret, each form-encoded (RFC 6749 section 2.3.1).
  const decoded = Buffer.from(credentials, 'base64').toString('utf8');
  const secret = decoded.slice(decoded.indexOf(':') + 1);
  if (decoded.includes(':') && secret) sent.push(secret, safeDecode(secret));
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

/** Shortest piece of a secret taken as its echo: a provider may repeat a token cut short. */
const ECHO_PIECE = 12;

/**
 * True when `text` holds one of the `sent` secrets (as it is, URL-, base64- or base64url-encoded),
 * or any {@link ECHO_PIECE} characters of one in a row (an echo cut short).
 */
function echoesSecret(text: string, sent: readonly string[]): boolean {
  const folded = text.toLowerCase();
  for (const secret of sent) {
    if (!secret) continue;
    const forms = [secret, encodeURIComponent(secret), Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('base64url')];
    for (const form of forms) {
      if (form.length <= ECHO_PIECE) {
        if (folded.includes(form.toLowerCase())) return true;
        continue;
      }
      for (let at = 0; at + ECHO_PIECE <= form.length; at += 1) if (folded.includes(form.slice(at, at + ECHO_PIECE).toLowerCase())) return true;
    }
  }
  return false;
}

/**
 * The upstream's error, described without anything it echoed back: its `error_description` is
 * kept only when it holds none of the secrets the request `sent` (the code, PKCE verifier, refresh
 * token, client secret or assertion), since it goes into audit events, the connect page and the
 * agent's answer.
 */
function describe(error: unknown, sent: readonly string[] = []): UpstreamOAuthError {
  if (error instanceof UpstreamOAuthError) return error;
  // A 5xx or 429 is the endpoint's own trouble, whatever its body says: the grant may be fine,
  // so it is never a refusal (which would mark the user's connection broken for good).
  const status = answerStatus(error);
  if (status !== undefined && (status >= 500 || status === 429)) {
    return new UpstreamOAuthError('upstream_unavailable', `the upstream OAuth endpoint answered ${status}`, false, retryAfterOf(error, status));
  }
  if (error instanceof oauth.ResponseBodyError) {
    const code = /^[\x21-\x7e]{1,64}$/.test(error.error) && !echoesSecret(error.error, sent) ? error.error : 'invalid_response';
    if (OUTAGE_CODES.has(code)) return new UpstreamOAuthError('upstream_unavailable', `the upstream OAuth endpoint answered ${code}`, false);
    const described = typeof error.error_description === 'string' ? error.error_description.replace(/[^\x20-\x7e]/g, '').slice(0, 200) : '';
    const description = echoesSecret(described, sent) ? '[description withheld: it repeated a secret of the request]' : described;
    return new UpstreamOAuthError(code, `the upstream answered ${code}${description ? `: ${description}` : ''}`, true);
  }
  if (error instanceof oauth.AuthorizationResponseError) {
    if (OUTAGE_CODES.has(error.error)) {
      return new UpstreamOAuthError('upstream_unavailable', `the provider could not authorize right now (${error.error})`, false);
    }
    // The error comes in the browser's URL, as the provider wrote it: only an RFC 6749 error code
    // (section 4.1.2.1: printable ASCII without `"` and `\`) is repeated on the page and audited.
    if (!AUTHORIZATION_ERROR_CODE.test(error.error)) {
      return new UpstreamOAuthError('invalid_response', 'the provider refused the authorization with an error code that is not valid', true);
    }
    return new UpstreamOAuthError(error.error, `the provider refused the authorization: ${error.error}`, true);
  }
  const cause = (error as { cause?: { code?: string } }).cause;
  if ((error as { code?: string }).code === UPSTREAM_ADDRESS_REFUSED || cause?.code === UPSTREAM_ADDRESS_REFUSED) {
    return new UpstreamOAuthError('upstream_address_refused', 'the upstream OAuth endpoint is not reachable from Writ (WRIT_UPSTREAM_ALLOWED_NETWORKS)', false);
  }
  if ((error as { name?: string }).name === 'TimeoutError') {
    return new UpstreamOAuthError('upstream_timeout', 'the upstream OAuth endpoint did not answer in time', false);
  }
  // oauth4webapi refuses some answers as unsupported rather than malformed (a `token_type` other
  // than Bearer or DPoP, an implicit or hybrid response with tokens in the callback): the
  // provider answered, with something unacceptable; never its outage (a 503 asking to retry).
  if (error instanceof oauth.OperationProcessingError || error instanceof oauth.UnsupportedOperationError) {
    return new UpstreamOAuthError('invalid_response', `the upstream's answer is not acceptable: ${error.message.slice(0, 200)}`, true);
  }
  return new UpstreamOAuthError('upstream_unreachable', 'the upstream OAuth endpoint could not be reached', false);
}

/** The `Retry-After` heeded of an answer oauth4webapi refused (see {@link upstreamRetryAfter}). */
function retryAfterOf(error: unknown, status: number): number | undefined {
  const response =
    error instanceof oauth.ResponseBodyError
      ? error.response
      : error instanceof oauth.OperationProcessingError
        ? (error.cause as Response | undefined)
        : undefined;
  const headers = (response as { headers?: unknown } | undefined)?.headers;
  return headers instanceof Headers ? upstreamRetryAfter(status, headers.get('retry-after')) : undefined;
}

/** The HTTP status of an answer oauth4webapi refused (an error body, or an unexpected status), if it was one. */
function answerStatus(error: unknown): number | undefined {
  if (error instanceof oauth.ResponseBodyError) return error.status;
  if (error instanceof oauth.OperationProcessingError && error.code === oauth.RESPONSE_IS_NOT_CONFORM) {
    const status = (error.cause as { status?: unknown } | undefined)?.status;
    return typeof status === 'number' ? status : undefined;
  }
  return undefined;
}
