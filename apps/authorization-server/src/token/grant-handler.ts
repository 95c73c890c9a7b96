import type { FormParams } from '@writ/oauth';
import type { ClientKind, RegisteredClient } from '../client-auth/registered-client';
import type { TokenResponseDto } from './token-response.dto';
import type { ClientAssertionJti } from '../client-auth/client-assertion-jti';

/** What a grant handler gets: the parsed form and the authenticated client. */
export interface GrantContext {
  readonly params: FormParams;
  readonly client: RegisteredClient;
  /** A verified DPoP proof sent with the request (RFC 9449): the token is to be bound to its key. */
  readonly dpop?: { readonly jkt: string };
  /**
   * The client assertion's `jti`, still to be spent, for a handler that
   * {@link GrantHandler.spendsAssertionJti}: with the credential in the issuing batch, or by
   * `consume()` before anything else is recorded. Whatever is still pending when the handler
   * ends is spent by the token endpoint before it answers.
   */
  readonly assertionJti?: ClientAssertionJti;
}

/** One `grant_type` of the token endpoint (node-oidc-provider style: one file per grant). */
export interface GrantHandler {
  /** The `grant_type` value it answers. */
  readonly grantType: string;
  /** The kinds of client allowed to use it; others get `unauthorized_client`. */
  readonly clientKinds: readonly ClientKind[];
  /** True when the handler spends the client assertion's `jti` itself ({@link GrantContext.assertionJti}). */
  readonly spendsAssertionJti?: boolean;
  /** Issues the token, or throws an `OAuthError`. */
  handle(context: GrantContext): Promise<TokenResponseDto>;
}

/** Injection token of the list of registered grant handlers. */
export const GRANT_HANDLERS = Symbol('GRANT_HANDLERS');
