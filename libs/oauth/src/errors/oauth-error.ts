/**
 * The scheme of a `WWW-Authenticate` challenge: RFC 6750 (`Bearer`) or RFC 9449 (`DPoP`) at a
 * resource server; `Basic` (RFC 7617) only for a client that authenticated with it (RFC 6749 §5.2).
 */
export type WwwAuthenticateScheme = 'Bearer' | 'DPoP' | 'Basic';

/**
 * What a resource-server error needs to render its `WWW-Authenticate` challenge; the
 * `error` and `error_description` attributes come from the error itself.
 */
export interface WwwAuthenticateInfo {
  readonly scheme: WwwAuthenticateScheme;
  /** Defaults to `writ`. */
  readonly realm?: string;
  /** RFC 6750 §3 `scope` attribute, e.g. for `insufficient_scope`. */
  readonly scope?: string;
  /** RFC 9449 §7.1 `algs` attribute: the DPoP proof algorithms the server accepts. */
  readonly algs?: readonly string[];
  /** RFC 9728 §5.1 `resource_metadata` attribute: the URL of the protected resource's metadata. */
  readonly resourceMetadata?: string;
}

/** Options shared by every {@link OAuthError}. */
export interface OAuthErrorOptions {
  /** Members added to the JSON body after `error` and `error_description` (they cannot replace them). */
  readonly extra?: Readonly<Record<string, unknown>>;
  /** Present when the response must carry a `WWW-Authenticate` challenge. */
  readonly wwwAuthenticate?: WwwAuthenticateInfo;
  /** A stable internal code for logs and audit events; never sent to the client. */
  readonly reason?: string;
  /** The underlying error, for logs only; never serialised. */
  readonly cause?: unknown;
}

/** The RFC 6749 §5.2 error response body. */
export interface OAuthErrorBody {
  readonly error: string;
  readonly error_description: string;
  readonly [member: string]: unknown;
}

/**
 * Base of every OAuth error: one subclass per RFC error code, each with its HTTP status.
 * The description is sent to the client as `error_description`, so constructors take a
 * plain, fixed sentence: never a token, an assertion, a secret or an unfiltered request value.
 */
export abstract class OAuthError extends Error {
  /** The RFC error code, e.g. `invalid_request`. */
  abstract readonly error: string;
  /** The HTTP status of the response. */
  abstract readonly status: number;
  /** The `error_description` sent to the client. */
  readonly description: string;
  /** Extra members of the JSON body. */
  readonly extra: Readonly<Record<string, unknown>>;
  /** The `WWW-Authenticate` challenge to send, if any (see `wwwAuthenticateFor`). */
  readonly wwwAuthenticate: WwwAuthenticateInfo | undefined;
  /** Stable internal code for audit, never serialised (e.g. `assertion_replay`). */
  readonly reason: string | undefined;

  protected constructor(description: string, options: OAuthErrorOptions = {}) {
    super(description, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.description = description;
    this.extra = Object.freeze({ ...(options.extra ?? {}) });
    this.wwwAuthenticate = options.wwwAuthenticate;
    this.reason = options.reason;
  }

  /**
   * Names the protected resource metadata (RFC 9728 §5.1) in this error's challenge, if it has
   * one: a resource server knows the resource only once it has parsed the request target.
   */
  withResourceMetadata(url: string): this {
    if (this.wwwAuthenticate !== undefined) {
      (this as { wwwAuthenticate: WwwAuthenticateInfo }).wwwAuthenticate = { ...this.wwwAuthenticate, resourceMetadata: url };
    }
    return this;
  }

  /** The RFC 6749 §5.2 body: `{error, error_description, ...extra}`. */
  toJSON(): OAuthErrorBody {
    const body: Record<string, unknown> = { error: this.error, error_description: this.description };
    for (const [name, value] of Object.entries(this.extra)) {
      if (name !== 'error' && name !== 'error_description' && value !== undefined) {
        Object.defineProperty(body, name, { value, enumerable: true, writable: true, configurable: true });
      }
    }
    return body as OAuthErrorBody;
  }
}

/** True when `value` is an {@link OAuthError} (safe to send to the client as is). */
export function isOAuthError(value: unknown): value is OAuthError {
  return value instanceof OAuthError;
}
