/** Base class of every error this SDK throws; `code` is stable, for programs to branch on. */
export class WritError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** What the authorization server answered (RFC 6749 §5.2 body, plus Writ's extra members). */
export interface OAuthErrorBody {
  error: string;
  error_description?: string;
  approval_id?: string;
  interval?: number;
  [member: string]: unknown;
}

const POLICY_PREFIX = /^(denied by policy|a human must approve this request):\s*/;

/**
 * The policy's reasons carried in an `error_description` ("denied by policy: a; b").
 * Descriptions without a policy prefix are one reason.
 */
export function reasonsOf(description: string | undefined): string[] {
  if (!description) return [];
  const match = POLICY_PREFIX.exec(description);
  if (!match) return [description];
  return description
    .slice(match[0].length)
    .split('; ')
    .map((reason) => reason.trim())
    .filter((reason) => reason.length > 0 && reason !== 'no reason given');
}

/** One offending field of a refused body (the Tasks API's `fields`), e.g. `{field: 'ttl_seconds', message: '…'}`. */
export interface FieldError {
  field: string;
  message?: string;
}

/** The offending fields an error body names: the Tasks API's `fields: [{field, message}]`, or one `field`. */
export function fieldsOf(body: OAuthErrorBody): FieldError[] {
  if (Array.isArray(body.fields)) {
    return body.fields.filter((entry): entry is FieldError => !!entry && typeof entry === 'object' && typeof (entry as FieldError).field === 'string');
  }
  return typeof body.field === 'string' ? [{ field: body.field }] : [];
}

function fieldText({ field, message }: FieldError): string {
  if (typeof message !== 'string' || message === '') return field;
  return message.startsWith(field) ? message : `${field}: ${message}`;
}

/**
 * An OAuth error answered by Writ's token endpoint (or the Tasks API): `error` is the RFC
 * error code (`invalid_grant`, `invalid_authorization_details`, `access_denied`…),
 * `reasons` the policy's reasons when the policy refused, `fields` the offending fields of a
 * refused body (also named in the message).
 */
export class WritOAuthError extends WritError {
  /** The RFC error code, e.g. `invalid_authorization_details`. */
  readonly error: string;
  readonly description: string | undefined;
  /** HTTP status of the answer. */
  readonly status: number;
  /** The policy's reasons (from `error_description`), empty when none were given. */
  readonly reasons: string[];
  /** The offending fields of a refused body, empty when none are named. */
  readonly fields: FieldError[];
  /** The whole error body as received. */
  readonly body: OAuthErrorBody;

  constructor(status: number, body: OAuthErrorBody, options?: { cause?: unknown }) {
    const fields = fieldsOf(body);
    const message = body.error_description ? `${body.error}: ${body.error_description}` : body.error;
    super(body.error, fields.length > 0 ? `${message} (${fields.map(fieldText).join('; ')})` : message, options);
    this.fields = fields;
    this.error = body.error;
    this.description = body.error_description;
    this.status = status;
    this.reasons = reasonsOf(body.error_description);
    this.body = body;
  }
}

/** `invalid_authorization_details`: the policy (or the task's declared purpose) refused the request. */
export class PolicyRefusalError extends WritOAuthError {}

/** `access_denied`: e.g. an operator denied the approval, or it expired or was used. */
export class AccessDeniedError extends WritOAuthError {}

/** `invalid_grant`: the task token is not valid for this agent, or the task is over. */
export class InvalidGrantError extends WritOAuthError {}

/** `invalid_client`: the client assertion was refused (unknown client, wrong key, suspended). */
export class InvalidClientError extends WritOAuthError {}

/** Maps an error body to its typed class. */
export function oauthErrorFrom(status: number, body: OAuthErrorBody, cause?: unknown): WritOAuthError {
  const options = cause === undefined ? undefined : { cause };
  switch (body.error) {
    case 'invalid_authorization_details':
      return new PolicyRefusalError(status, body, options);
    case 'access_denied':
      return new AccessDeniedError(status, body, options);
    case 'invalid_grant':
      return new InvalidGrantError(status, body, options);
    case 'invalid_client':
      return new InvalidClientError(status, body, options);
    default:
      return new WritOAuthError(status, body, options);
  }
}

/** A human approval did not arrive before the agent's timeout; the request stays pending. */
export class ApprovalTimeoutError extends WritError {
  readonly approvalId: string;
  readonly reasons: string[];

  constructor(approvalId: string, reasons: string[]) {
    super('approval_timeout', `no decision on approval ${approvalId} before the timeout`);
    this.approvalId = approvalId;
    this.reasons = reasons;
  }
}

/** A gateway call was refused before anything was sent: the path would leave the connector. */
export class GatewayPathError extends WritError {
  constructor(message: string) {
    super('invalid_gateway_path', message);
  }
}

/**
 * No answer in time: a request to the authorization server that took longer than `timeoutMs`,
 * or a gateway call whose answer (its status and headers) did not arrive within its `timeoutMs`.
 * The request may have reached the server or the upstream: a non-idempotent call is not sent again.
 */
export class WritTimeoutError extends WritError {
  /** The limit that was reached, in milliseconds. */
  readonly timeoutMs: number;

  constructor(message: string, timeoutMs: number) {
    super('timeout', message);
    this.timeoutMs = timeoutMs;
  }
}

/** A non-OAuth answer where an OAuth one was expected (a proxy page, a 5xx, a malformed body). */
export class WritResponseError extends WritError {
  readonly status: number;

  constructor(status: number, message: string, options?: { cause?: unknown }) {
    super('unexpected_response', message, options);
    this.status = status;
  }
}
