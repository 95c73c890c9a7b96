import type { OAuthError, WwwAuthenticateScheme } from './oauth-error';

/** One challenge of a `WWW-Authenticate` header (RFC 6750 §3, RFC 9449 §7.1). */
export interface WwwAuthenticateChallenge {
  readonly scheme: WwwAuthenticateScheme;
  /** Defaults to `writ`. */
  readonly realm?: string;
  /** Omitted when the request carried no credentials at all (RFC 6750 §3.1). */
  readonly error?: string;
  readonly errorDescription?: string;
  readonly scope?: string;
  /** DPoP only: accepted proof algorithms, rendered space-separated. */
  readonly algs?: readonly string[];
  /** RFC 9728 §5.1: where the protected resource metadata is. */
  readonly resourceMetadata?: string;
}

/** The realm every Writ service announces. */
export const DEFAULT_REALM = 'writ';

const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * RFC 7230 quoted-string: backslash and double quote are escaped; anything outside
 * printable ASCII (CR, LF, other controls, non-ASCII) becomes `?`, so a description can
 * neither inject a header line nor break the challenge syntax.
 */
function quote(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

function renderChallenge(challenge: WwwAuthenticateChallenge): string {
  const params: string[] = [`realm=${quote(challenge.realm ?? DEFAULT_REALM)}`];
  // RFC 7617 gives Basic a realm (and a charset) only: the error attributes are RFC 6750's.
  if (challenge.scheme === 'Basic') return `Basic ${params.join(', ')}`;
  if (challenge.error !== undefined) {
    // Error codes are ours, but stay defensive: an odd code is rendered harmlessly.
    params.push(`error=${quote(challenge.error)}`);
    if (challenge.errorDescription !== undefined) {
      params.push(`error_description=${quote(challenge.errorDescription)}`);
    }
  }
  if (challenge.scope !== undefined) params.push(`scope=${quote(challenge.scope)}`);
  if (challenge.scheme === 'DPoP' && challenge.algs !== undefined) {
    const algs = challenge.algs.filter((alg) => TOKEN.test(alg));
    if (algs.length > 0) params.push(`algs=${quote(algs.join(' '))}`);
  }
  if (challenge.resourceMetadata !== undefined) params.push(`resource_metadata=${quote(challenge.resourceMetadata)}`);
  return `${challenge.scheme} ${params.join(', ')}`;
}

/**
 * Builds a `WWW-Authenticate` value, e.g.
 * `Bearer realm="writ", error="invalid_token", error_description="the access token expired"`.
 * Several challenges (a gateway accepting both `Bearer` and `DPoP`, RFC 9449 §7.2) are
 * joined with `, `.
 */
export function buildWwwAuthenticate(challenges: WwwAuthenticateChallenge | readonly WwwAuthenticateChallenge[]): string {
  const list: readonly WwwAuthenticateChallenge[] = Array.isArray(challenges) ? challenges : [challenges as WwwAuthenticateChallenge];
  if (list.length === 0) throw new TypeError('at least one challenge is required');
  for (const challenge of list) {
    if (challenge.scheme !== 'Bearer' && challenge.scheme !== 'DPoP' && challenge.scheme !== 'Basic') {
      throw new TypeError('unsupported WWW-Authenticate scheme');
    }
  }
  return list.map(renderChallenge).join(', ');
}

/**
 * The `WWW-Authenticate` value for an error that carries challenge data
 * (`invalid_token`, `insufficient_scope`, DPoP errors at a resource server), else `undefined`.
 */
export function wwwAuthenticateFor(error: OAuthError): string | undefined {
  const info = error.wwwAuthenticate;
  if (info === undefined) return undefined;
  return buildWwwAuthenticate({
    scheme: info.scheme,
    realm: info.realm,
    error: error.error,
    errorDescription: error.description,
    scope: info.scope,
    algs: info.algs,
    resourceMetadata: info.resourceMetadata,
  });
}
