/** RFC 9068 §2.1 `typ` header of every access token Writ issues. */
export const ACCESS_TOKEN_TYP = 'at+jwt';

/** RFC 8693 §2.1 `grant_type` of a token exchange. */
export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** RFC 8693 §3 token type of a JWT: the only accepted `subject_token_type` (a task token). */
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';

/** RFC 8693 §3 token type of an access token: the only `requested_token_type`, and the `issued_token_type`. */
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
