import type { ConnectorDetail } from '@writ/database';

/** A successful token endpoint response (RFC 6749 §5.1, RFC 8693 §2.2.1, RFC 9396 §7). */
export interface TokenResponseDto {
  access_token: string;
  token_type: 'Bearer' | 'DPoP';
  expires_in: number;
  issued_token_type?: string;
  scope?: string;
  authorization_details?: ConnectorDetail[];
}
