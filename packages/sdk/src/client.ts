import { importJWK, type CryptoKey, type JWK } from 'jose';
import * as oauth from 'oauth4webapi';
import { oauthErrorFrom, WritError, WritOAuthError, WritResponseError, WritTimeoutError, type OAuthErrorBody } from './errors.js';
import { withRetries } from './retry.js';
import { anySignal, checkTimeout } from './signals.js';

/** A client's private signing key: a WebCrypto key with its `kid`, or a private JWK (with `kid`). */
export type ClientKeyInput = { privateKey: CryptoKey; kid?: string } | JWK;

/** Options shared by {@link Orchestrator} and {@link Agent}. */
export interface WritClientOptions {
  /** The issuer identifier (`WRIT_ISSUER`), e.g. `https://writ.example.com`. */
  issuer: string;
  /** The client id registered through the admin API. */
  clientId: string;
  /** The private key whose public half is in the client's registered JWKS. */
  key: ClientKeyInput;
  /** A `fetch` to use instead of the global one (tests, proxies, instrumentation). */
  fetch?: typeof fetch;
  /**
   * Allow `http:` URLs (local development and tests only). By default every URL must be
   * `https:`, as oauth4webapi requires.
   */
  allowInsecureRequests?: boolean;
  /**
   * In milliseconds, default 30 000: how long one request to the authorization server
   * (discovery, token endpoint, Tasks API) may take before it is aborted, and how long a
   * gateway call ({@link Agent.fetch}, {@link Agent.mcpFetch}) waits for its answer's status
   * and headers (per attempt) before it fails with a `WritTimeoutError`. A gateway answer's
   * body is not cut short once it has begun (an MCP event stream stays open): a caller's
   * `signal` ends it. Gateway calls take their own `timeoutMs` too.
   */
  timeoutMs?: number;
}

/** The largest answer read from the authorization server (discovery, token endpoint, Tasks API): 1 MiB. */
export const MAX_ANSWER_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;
const SKEW_THRESHOLD_SECONDS = 5;

const ASYMMETRIC = /^(ES(256|384|512)|EdDSA|Ed25519|PS(256|384|512)|RS(256|384|512))$/;

async function importClientKey(input: ClientKeyInput): Promise<oauth.PrivateKey> {
  if ('privateKey' in input && typeof input.privateKey === 'object') {
    return { key: input.privateKey, kid: input.kid };
  }
  const jwk = input as JWK;
  if (typeof jwk.kty !== 'string' || jwk.kty === 'oct' || typeof jwk.d !== 'string') {
    throw new WritError('invalid_key', 'the client key must be an asymmetric private JWK (with "d") or a WebCrypto private key');
  }
  const alg = jwk.alg ?? (jwk.kty === 'EC' ? { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' }[jwk.crv ?? ''] : jwk.kty === 'OKP' ? 'EdDSA' : 'PS256');
  if (!alg || !ASYMMETRIC.test(alg)) throw new WritError('invalid_key', `unsupported client key algorithm ${alg ?? jwk.kty}`);
  const key = await importJWK(jwk, alg);
  if (key instanceof Uint8Array) throw new WritError('invalid_key', 'the client key must be asymmetric');
  return { key: key, kid: jwk.kid };
}

/**
 * `response` with a body that fails with a {@link WritResponseError} past {@link MAX_ANSWER_BYTES}:
 * a broken or hostile authorization server streaming without end cannot fill the agent's memory.
 */
export function boundedAnswer(response: Response): Response {
  if (!response.body) return response;
  let read = 0;
  const limit = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      read += chunk.byteLength;
      if (read > MAX_ANSWER_BYTES) {
        controller.error(new WritResponseError(response.status, `the authorization server's answer is larger than ${MAX_ANSWER_BYTES} bytes`));
      } else {
        controller.enqueue(chunk);
      }
    },
  });
  return new Response(response.body.pipeThrough(limit), { status: response.status, statusText: response.statusText, headers: response.headers });
}

/** The body of a JSON answer, or undefined. */
export async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The error a non-2xx JSON answer stands for (an OAuth error body when it is one). */
export function errorFromAnswer(status: number, body: unknown): WritError {
  if (body && typeof body === 'object' && typeof (body as OAuthErrorBody).error === 'string') {
    const shaped = body as OAuthErrorBody & { message?: unknown };
    const description = shaped.error_description ?? (typeof shaped.message === 'string' ? shaped.message : undefined);
    return oauthErrorFrom(status, { ...shaped, error_description: description });
  }
  return new WritResponseError(status, `unexpected answer ${status} from Writ`);
}

/**
 * The OAuth machinery one client (orchestrator or agent) needs: the discovered server
 * metadata, `private_key_jwt` client authentication (a fresh assertion per request), and
 * token endpoint calls whose errors become typed {@link WritOAuthError}s.
 */
export class WritClient {
  readonly issuer: string;
  readonly client: oauth.Client;
  readonly fetch: typeof fetch;
  /** {@link fetch} for the authorization server: its answers are cut off past {@link MAX_ANSWER_BYTES}. */
  readonly serverFetch: typeof fetch;
  readonly allowInsecure: boolean;
  readonly timeoutMs: number;
  #metadata?: Promise<oauth.AuthorizationServer>;
  #auth?: Promise<oauth.ClientAuth>;
  readonly #key: ClientKeyInput;

  constructor(options: WritClientOptions) {
    if (!options.issuer) throw new WritError('invalid_options', 'issuer is required');
    if (!options.clientId) throw new WritError('invalid_options', 'clientId is required');
    this.issuer = options.issuer.replace(/\/+$/, '');
    this.client = { client_id: options.clientId };
    this.fetch = options.fetch ?? ((...args: Parameters<typeof fetch>) => fetch(...args));
    this.serverFetch = async (...args: Parameters<typeof fetch>) => boundedAnswer(await this.fetch(...args));
    this.allowInsecure = options.allowInsecureRequests === true;
    this.#key = options.key;
    this.timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
    if (!this.allowInsecure && new URL(this.issuer).protocol !== 'https:') {
      throw new WritError('invalid_options', 'the issuer must be https (set allowInsecureRequests for local development)');
    }
  }

  /**
   * oauth4webapi options: our fetch (for the authorization server, `bounded`: answers cut off past
   * {@link MAX_ANSWER_BYTES}; a gateway answer is the caller's, as it is), and http allowed only when asked for.
   */
  options<T extends object>(extra: T = {} as T, bounded = true): T & { [oauth.customFetch]: never; [oauth.allowInsecureRequests]: boolean } {
    // oauth4webapi types customFetch per call (its body types); any `fetch` accepts them all.
    const customFetch = (bounded ? this.serverFetch : this.fetch) as unknown as never;
    return { ...extra, [oauth.customFetch]: customFetch, [oauth.allowInsecureRequests]: this.allowInsecure };
  }

  /** `signal`, and the authorization server timeout: whichever aborts first. */
  timeoutSignal(signal?: AbortSignal): AbortSignal {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    return signal ? anySignal([signal, timeout]) : timeout;
  }

  /**
   * `error` as a {@link WritTimeoutError} when it is the authorization server timeout firing
   * (`AbortSignal.timeout`'s `TimeoutError`) and not the caller's own `signal`; else as it is.
   */
  timedOut(error: unknown, what: string, signal?: AbortSignal): unknown {
    // By name: a DOMException from another realm (a test runner's, a worker's) is not `instanceof Error`.
    const name = typeof error === 'object' && error !== null ? (error as { name?: unknown }).name : undefined;
    if (error instanceof WritError || name !== 'TimeoutError' || signal?.aborted) return error;
    return new WritTimeoutError(`no answer from the authorization server (${what}) within ${this.timeoutMs} ms`, this.timeoutMs);
  }

  /**
   * The authorization server's RFC 8414 metadata, fetched once (again after a failure): from the
   * §3.1 location (`/.well-known/oauth-authorization-server` between the host and the issuer's
   * path), its `issuer` the configured one (§3.3) and its token endpoint `https` (unless insecure
   * requests are allowed). Any failure but a timeout is a `discovery_failed` {@link WritError}
   * naming why, as in the Python SDK.
   */
  metadata(): Promise<oauth.AuthorizationServer> {
    this.#metadata ??= (async () => {
      const issuer = new URL(this.issuer);
      const response = await withRetries(() => oauth.discoveryRequest(issuer, this.options({ algorithm: 'oauth2' as const, signal: this.timeoutSignal() })));
      this.learnClock(response);
      const metadata = await oauth.processDiscoveryResponse(issuer, response);
      const protocol = typeof metadata.token_endpoint === 'string' && URL.canParse(metadata.token_endpoint) ? new URL(metadata.token_endpoint).protocol : '';
      if (!(protocol === 'https:' || (this.allowInsecure && protocol === 'http:'))) {
        throw new WritError('discovery_failed', `discovery of ${this.issuer} failed: the token_endpoint is not an https URL`);
      }
      return metadata;
    })().catch((caught: unknown) => {
      this.#metadata = undefined;
      const cutOff = caught instanceof oauth.OperationProcessingError && caught.cause instanceof WritResponseError ? caught.cause : caught;
      const error = this.timedOut(cutOff, 'discovery');
      if (error instanceof WritError) throw error;
      const reason =
        error instanceof oauth.OperationProcessingError && error.cause instanceof Response
          ? `unexpected answer ${error.cause.status}`
          : error instanceof Error
            ? error.message
            : 'no answer';
      throw new WritError('discovery_failed', `discovery of ${this.issuer} failed: ${reason}`, { cause: error });
    });
    return this.#metadata;
  }

  /**
   * Reads the server's clock from an answer's `Date`: when ours is more than 5 s off, client
   * assertions (oauth4webapi's `clockSkew`) and DPoP proofs ({@link now}) use the server's time,
   * so that a skewed agent host is not refused for `iat`/`exp` out of the server's window.
   */
  learnClock(response: Response): void {
    const serverNow = Date.parse(response.headers.get('date') ?? '');
    if (Number.isNaN(serverNow)) return;
    const skew = (serverNow - Date.now()) / 1000;
    this.client[oauth.clockSkew] = Math.abs(skew) > SKEW_THRESHOLD_SECONDS ? Math.round(skew) : 0;
  }

  /** The time on the server's clock, in seconds since the epoch. */
  now(): number {
    return Math.floor(Date.now() / 1000) + (this.client[oauth.clockSkew] ?? 0);
  }

  /** `private_key_jwt`: oauth4webapi signs a new assertion (new `jti`) for every request. */
  clientAuth(): Promise<oauth.ClientAuth> {
    this.#auth ??= importClientKey(this.#key).then((key) => oauth.PrivateKeyJwt(key));
    return this.#auth;
  }

  /**
   * A token endpoint request; returns the processed token response or throws a typed
   * {@link WritOAuthError} (with the whole error body, e.g. `approval_id`, `interval`).
   * A 429/503 is retried after its `Retry-After` (bounded, see `retry.ts`); a DPoP nonce
   * the server asks for (`use_dpop_nonce`, RFC 9449 §8) is sent in one more attempt.
   */
  async token(grantType: string, parameters: Record<string, string>, dpop?: oauth.DPoPHandle, signal?: AbortSignal): Promise<oauth.TokenEndpointResponse> {
    const as = await this.metadata();
    const auth = await this.clientAuth();
    for (let attempt = 0; ; attempt++) {
      let status = 0; // of the answer, once there is one: a malformed 200 is a WritResponseError with status 200
      try {
        const response = await withRetries(
          () =>
            oauth.genericTokenEndpointRequest(as, this.client, auth, grantType, parameters, this.options({ DPoP: dpop, signal: this.timeoutSignal(signal) })),
          signal,
        );
        status = response.status;
        return await oauth.processGenericTokenEndpointResponse(as, this.client, response);
      } catch (error) {
        // oauth4webapi has kept the `DPoP-Nonce` the answer carried: the next proof uses it.
        if (dpop && attempt === 0 && oauth.isDPoPNonceError(error)) continue;
        throw this.wrap(this.timedOut(error, 'token endpoint', signal), status);
      }
    }
  }

  /** Maps oauth4webapi's errors to this SDK's; `status` is the answer's, when oauth4webapi's error does not carry it. */
  wrap(error: unknown, status = 0): unknown {
    if (error instanceof oauth.ResponseBodyError) {
      return oauthErrorFrom(error.status, error.cause as OAuthErrorBody, error);
    }
    if (error instanceof oauth.WWWAuthenticateChallengeError) {
      const challenge = error.cause[0];
      const body: OAuthErrorBody = {
        error: challenge?.parameters.error ?? 'invalid_client',
        error_description: challenge?.parameters.error_description,
      };
      return oauthErrorFrom(error.status, body, error);
    }
    // oauth4webapi puts the whole answer in these errors' `cause` (`{body}`): for a malformed
    // token response that is the access token itself, which console.log(error) would print.
    // Only the message and code are kept.
    if (error instanceof oauth.OperationProcessingError) {
      if (error.cause instanceof WritResponseError) return error.cause; // an answer cut off (boundedAnswer)
      return new WritResponseError(error.cause instanceof Response ? error.cause.status : status, `${error.message} (${error.code})`);
    }
    if (error instanceof oauth.UnsupportedOperationError) {
      return new WritResponseError(status, error.message);
    }
    return error;
  }
}

export { WritOAuthError };
