import type { ConnectorAuthorizationDetail } from '../authorization-details/authorization-details.types';
import { checkAuthorizationDetails } from '../authorization-details/parse-authorization-details';
import { InvalidAuthorizationDetailsError, InvalidRequestError, InvalidScopeError, InvalidTargetError } from '../errors/oauth-errors';
import type { OAuthError } from '../errors/oauth-error';
import { type FormParams, optionalParam, requireParam } from '../params/parse-form-body';
import { connectorResourceUrl, foreignLocations } from './connector-resource-url';
import { TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from './token-exchange.constants';

/** A validated RFC 8693 token exchange request of Writ's profile. */
export interface TokenExchangeRequest {
  /** The task token, still to be verified by the caller. */
  readonly subjectToken: string;
  readonly subjectTokenType: typeof TOKEN_TYPE_JWT;
  readonly requestedTokenType: typeof TOKEN_TYPE_ACCESS_TOKEN;
  /** The `resource` parameter, if sent: an absolute URI without fragment. */
  readonly resource: string | undefined;
  /** The `audience` parameter, if sent: always equal to `resource`. */
  readonly audience: string | undefined;
  /** Parsed, normalised `authorization_details`, all for {@link TokenExchangeRequest.connector}. */
  readonly authorizationDetails: ConnectorAuthorizationDetail[];
  /** The one connector every entry names: the issued token's audience. */
  readonly connector: string;
}

/** Options of {@link parseTokenExchangeRequest}. */
export interface ParseTokenExchangeOptions {
  /** Most `authorization_details` entries. Default 10. */
  readonly maxAuthorizationDetails?: number;
  /**
   * `WRIT_GATEWAY_URL`. When given, a `resource` must be exactly the connector's URL
   * (`connectorResourceUrl`), else `invalid_target`; and so must every entry's `locations`,
   * else `invalid_authorization_details` (see `foreignLocations`).
   */
  readonly gatewayUrl?: string;
}

const MAX_SUBJECT_TOKEN_LENGTH = 16_384;
/** Most problems of `authorization_details` one `error_description` lists (it stays short). */
const MAX_DESCRIBED_PROBLEMS = 10;

function isAbsoluteUriWithoutFragment(value: string): boolean {
  // RFC 8707 §2: absolute URI, no fragment. The WHATWG parser forgives surrounding
  // whitespace and backslashes; a resource must not need forgiving.
  if (value.includes('#') || /[\s\\]/.test(value) || !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(value)) return false;
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * What token exchange refuses about where parsed `authorization_details` (and `resource`) point,
 * before any policy: entries naming more than one connector, RFC 9396 `locations` other than the
 * connector's own URL, a `resource` other than it (the last two only with `gatewayUrl`). Shared
 * with the policy dry run, which reports it instead of throwing.
 */
export function exchangeTargetRefusal(
  details: readonly ConnectorAuthorizationDetail[],
  resource: string | undefined,
  gatewayUrl: string | undefined,
): OAuthError | undefined {
  const connector = details[0]?.connector;
  if (details.some((entry) => entry.connector !== connector)) {
    return new InvalidAuthorizationDetailsError('all authorization_details entries must name the same connector', {
      reason: 'multiple_connectors',
    });
  }
  if (gatewayUrl === undefined) return undefined;
  for (const [index, detail] of details.entries()) {
    const foreign = foreignLocations(gatewayUrl, detail);
    if (foreign.length > 0) {
      return new InvalidAuthorizationDetailsError(`authorization_details[${index}].locations[${foreign[0]}] must be the URL of the connector`, {
        reason: 'location_mismatch',
      });
    }
  }
  if (resource !== undefined && resource !== connectorResourceUrl(gatewayUrl, connector)) {
    return new InvalidTargetError('resource must be the URL of the requested connector', { reason: 'resource_mismatch' });
  }
  return undefined;
}

/**
 * Validates the parameters of a token exchange (RFC 8693 §2.1) in Writ's profile:
 * `subject_token` required; `subject_token_type` required and `...:token-type:jwt`;
 * `requested_token_type`, if sent, `...:token-type:access_token`; `actor_token` and
 * `actor_token_type` refused (`invalid_request`: delegation chains are not supported);
 * `scope` refused with `invalid_scope` (RFC 6749 §5.2: Writ grants only through
 * `authorization_details`, and silently ignoring a scope would grant something other
 * than what was asked); `resource` optional, an absolute URI without fragment
 * (`invalid_target`, RFC 8707 §2); `audience`, if sent, equal to `resource`
 * (`invalid_target`); `authorization_details` required and parsed (RFC 9396), all entries
 * naming one connector since the token's `aud` is that connector. Client authentication
 * parameters and unknown parameters are ignored here (RFC 6749 §3.2).
 */
export function parseTokenExchangeRequest(params: FormParams, options: ParseTokenExchangeOptions = {}): TokenExchangeRequest {
  if (params.has('actor_token') || params.has('actor_token_type')) {
    throw new InvalidRequestError('actor_token is not supported', { reason: 'actor_token_unsupported' });
  }
  if (params.has('scope')) {
    throw new InvalidScopeError('scope is not supported in token exchange: request authorization_details', {
      reason: 'scope_unsupported',
    });
  }

  const subjectToken = requireParam(params, 'subject_token');
  if (subjectToken.length > MAX_SUBJECT_TOKEN_LENGTH) {
    throw new InvalidRequestError('subject_token is too large', { reason: 'subject_token_too_large' });
  }
  const subjectTokenType = requireParam(params, 'subject_token_type');
  if (subjectTokenType !== TOKEN_TYPE_JWT) {
    throw new InvalidRequestError('unsupported subject_token_type', { reason: 'subject_token_type' });
  }
  const requestedTokenType = optionalParam(params, 'requested_token_type');
  if (requestedTokenType !== undefined && requestedTokenType !== TOKEN_TYPE_ACCESS_TOKEN) {
    throw new InvalidRequestError('unsupported requested_token_type', { reason: 'requested_token_type' });
  }

  const resource = optionalParam(params, 'resource');
  if (resource !== undefined && !isAbsoluteUriWithoutFragment(resource)) {
    throw new InvalidTargetError('resource must be an absolute URI without a fragment', { reason: 'resource_syntax' });
  }
  const audience = optionalParam(params, 'audience');
  if (audience !== undefined && audience !== resource) {
    throw new InvalidTargetError('audience must equal resource', { reason: 'audience_mismatch' });
  }

  // One error per response (RFC 6749 section 5.2), but its description lists every problem of
  // authorization_details found (at most MAX_DESCRIBED_PROBLEMS), not only the first.
  const checked = checkAuthorizationDetails(requireParam(params, 'authorization_details'), {
    maxEntries: options.maxAuthorizationDetails,
    maxProblems: MAX_DESCRIBED_PROBLEMS,
  });
  if (checked.details === undefined) {
    throw new InvalidAuthorizationDetailsError(checked.problems.map((problem) => problem.description).join('; '), {
      reason: 'authorization_details_syntax',
    });
  }
  const authorizationDetails = checked.details;
  const refusal = exchangeTargetRefusal(authorizationDetails, resource, options.gatewayUrl);
  if (refusal) throw refusal;
  const connector = authorizationDetails[0].connector;

  return {
    subjectToken,
    subjectTokenType: TOKEN_TYPE_JWT,
    requestedTokenType: TOKEN_TYPE_ACCESS_TOKEN,
    resource,
    audience,
    authorizationDetails,
    connector,
  };
}
