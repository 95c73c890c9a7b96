import { Inject, Injectable } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { Dispatcher, request as undiciRequest } from 'undici';
import { AuditEventInput, AuditService, AuditUnavailableError, isConnectionError } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { PG_POOL, type ConnectorDetail, type ConnectorOperation } from '@writ/database';
import type { Pool } from 'pg';
import { MasterKey, SigningKeyStore } from '@writ/keys';
import {
  ACCESS_TOKEN_TYP,
  DPOP_SIGNING_ALGS,
  InsufficientScopeError,
  InvalidDpopProofError,
  InvalidRequestError,
  InvalidTokenError,
  OAuthError,
  TemporarilyUnavailableError,
  TooManyRequestsError,
} from '@writ/oauth';
import { checkDpopProof, PgJtiStore } from '@writ/credentials';
import type { BudgetReservation } from '@writ/grants';
import { SpanKind } from '@opentelemetry/api';
import { FailureThrottle, FailureVerdict, inSpan, LOGGER, sourceAddress, withTraceContext } from '@writ/platform';
import { parameterNameForms, UpstreamNetworks } from '@writ/connectors';
import { CatalogueCache } from '../catalogue/catalogue-cache';
import { classifyMcpRequest, McpCall, parseToolCatalogue } from '../mcp/mcp-request';
import { JsonRpcId, mcpRefusal, requestIdOf } from '../mcp/mcp-refusal';
import { mcpResponseBody } from '../mcp/mcp-response';
import { McpFilterError } from '../mcp/tools-list-filter';
import { resourceMetadataUrl } from '../mcp/resource-metadata';
import { McpSessionRepository } from '../mcp/mcp-session.repository';
import { BadGatewayError, GatewayTimeoutError, InvalidFieldError, PayloadTooLargeError, UnsupportedMediaTypeError } from '../gateway-errors';
import {
  agentResponseHeaders,
  allowedRequestHeaders,
  compressedTransfer,
  encodedBody,
  isMethodOverrideHeader,
  uncheckedHeaderProblem,
  unlistedRequestHeader,
  upstreamRequestHeaders,
} from '../upstream/forward-headers';
import { redactionSecrets, SecretRedactor } from '../upstream/secret-redactor';
import { CredentialHeader, SealedCredential, UpstreamCredentials } from '../upstream/upstream-credentials.service';
import { literalDestinationRefusal, UPSTREAM_ADDRESS_REFUSED, UPSTREAM_DISPATCHER } from '../upstream/upstream-dispatcher';
import { checkConstraints, CheckedConstraint, hasConstraints, needsBody } from './check-constraints';
import { CredentialState, GrantStateRepository, SpendVerdict } from '@writ/grants';
import { CredentialCache } from './credential-cache';
import { SpendForecast } from './spend-forecast';
import { parseRequestTarget, RequestTarget } from './request-target';
import { parseStrictJson, StrictJsonError } from './strict-json';
import { bodyMemberNames, objectKeys } from './body-names';
import { boundBySignedLimits, signedLimitsOf } from './signed-limits';

/** The parameter Rails, Laravel and Symfony read as the method to route (a form's `_method=DELETE`), as {@link parameterNameForms} give it. */
const METHOD_PARAMETER = '_method';

const JSON_TYPE = /^application\/(?:[a-z0-9.+-]+\+)?json\s*(?:;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** What the audit trail knows about one call as it is checked. */
interface CallContext {
  started: bigint;
  method: string;
  path: string;
  connectorId: string | null;
  jti?: string;
  agentId?: string;
  taskId?: string | null;
  operation?: string;
  /** As checked, with string values replaced by their audit HMAC. */
  constraints?: CheckedConstraint[];
  /** `mcp` connectors: the JSON-RPC method (or `GET`/`DELETE`, `response`). */
  mcpMethod?: string;
  /** `mcp` connectors: the id of the JSON-RPC request, which a refusal answers as a JSON-RPC error. */
  mcpRequestId?: JsonRpcId;
  /** This attempt checks the call with a remembered credential state (see {@link CredentialCache}). */
  remembered?: boolean;
  /** The request body, read once whatever the number of attempts. */
  body?: Promise<Buffer>;
  /** The DPoP proof's check (its `jti` is spent once), whatever the number of attempts. */
  possession?: Promise<void>;
}

/** What spending a checked call came to: forward it (with its budget reservation, if any), or check it again on fresh state. */
type SpendOutcome = { retry: true } | { retry: false; reservation?: BudgetReservation };

/** Attempts on fresh state after the first: a connector changed under each of them (a burst of catalogue edits) before 503. */
const FRESH_ATTEMPTS = 3;

/** A call that passed every check and may spend its use and go upstream. */
interface CheckedCall {
  target: RequestTarget;
  state: CredentialState;
  /** Absent for MCP messages that are not tool calls. */
  operation: ConnectorOperation | undefined;
  body: Buffer;
  sealed: SealedCredential;
  credential: CredentialHeader | undefined;
  /** The request's value of each granted constraint, as checked (what a `sum` budget charges). */
  values: Record<string, unknown>;
  /** `mcp` connectors: what the message is; only `tools/call` spends a use. */
  mcp?: McpCall;
  /** Each header a `header` constraint checked, with its value: forwarded exactly so. */
  headers?: Record<string, string>;
}

function elapsedMs(started: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100;
}

/**
 * The gateway's chain of checks for `ANY /connectors/{id}/{path}`: a normal target, a valid
 * access token for this connector, a live credential and task, exactly one catalogue
 * operation, granted as an action, every constraint holding on the request as it will be
 * forwarded; then one use spent atomically together with its audit event, the upstream
 * credential injected, and the exact checked request forwarded. Every call, allowed or
 * refused, is an audit event; nothing is forwarded unless its event is committed.
 */
@Injectable()
export class ProxyService {
  /** Used DPoP proof `jti`s, shared by every instance. */
  private readonly jtis: PgJtiStore;

  constructor(
    private readonly keys: SigningKeyStore,
    private readonly grants: GrantStateRepository,
    private readonly states: CredentialCache,
    private readonly catalogue: CatalogueCache,
    private readonly credentials: UpstreamCredentials,
    private readonly audit: AuditService,
    private readonly master: MasterKey,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(UPSTREAM_DISPATCHER) private readonly dispatcher: Dispatcher,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(PG_POOL) pool: Pool,
    private readonly throttle: FailureThrottle,
    private readonly mcpSessions: McpSessionRepository,
  ) {
    this.jtis = new PgJtiStore(pool);
    this.networks = new UpstreamNetworks(config.upstreamAllowedNetworks);
  }

  /** Where upstreams may be (`WRIT_UPSTREAM_ALLOWED_NETWORKS`); the dispatcher checks resolved addresses again at connect time. */
  private readonly networks: UpstreamNetworks;

  /** {@link literalDestinationRefusal} by base URL: the networks are fixed for the life of the instance. */
  private readonly refusals = new Map<string, string | undefined>();
  /** What this instance expects use-limited credentials' next spends to leave. */
  private readonly forecast = new SpendForecast();

  private destinationRefusal(baseUrl: string): string | undefined {
    if (this.refusals.has(baseUrl)) return this.refusals.get(baseUrl);
    const refusal = literalDestinationRefusal(this.networks, baseUrl);
    if (this.refusals.size >= 1_000) this.refusals.clear();
    this.refusals.set(baseUrl, refusal);
    return refusal;
  }

  /** Checks, spends, forwards and streams the upstream response back. */
  async handle(req: Request, res: Response): Promise<void> {
    const call: CallContext = {
      started: process.hrtime.bigint(),
      method: req.method,
      path: req.originalUrl.split('?')[0].slice(0, 512),
      connectorId: null,
    };
    const source = sourceAddress(req);
    const blocked = await this.throttle.refuseIfBlocked('gateway', source);
    if (blocked) throw tooManyFailures(blocked);
    // The first attempt may check the call with a remembered credential state; a refusal, or a
    // spending statement that finds that state no longer good, sends the call through again on
    // state read now, which alone decides a refusal (and its audit event).
    for (let attempt = 0; ; attempt += 1) {
      const fresh = attempt > 0;
      let checked: CheckedCall;
      try {
        checked = await this.check(req, call, fresh);
      } catch (error) {
        if (call.remembered && error instanceof OAuthError) continue;
        this.credentials.refused(error);
        if (error instanceof OAuthError) {
          if (call.connectorId) error.withResourceMetadata(resourceMetadataUrl(this.config.gatewayUrl, call.connectorId));
          await this.refused(call, error, source);
        }
        if (this.answeredAsJsonRpc(res, call, error)) return;
        throw error;
      }
      let outcome: SpendOutcome;
      try {
        outcome = await this.spend(checked, call);
      } catch (error) {
        if (this.answeredAsJsonRpc(res, call, error)) return;
        throw error;
      }
      if (outcome.retry) {
        this.states.forgetConnector(checked.state.connector!.id);
        if (attempt >= FRESH_ATTEMPTS) throw new TemporarilyUnavailableError('the connector is being changed: try again', { reason: 'connector_changing' });
        continue;
      }
      this.credentials.forwarding(checked.sealed, checked.credential);
      await this.forward(req, res, checked, call, outcome.reservation);
      return;
    }
  }

  /** An MCP request refused after its credential was accepted gets a JSON-RPC error (see {@link mcpRefusal}). */
  private answeredAsJsonRpc(res: Response, call: CallContext, error: unknown): boolean {
    const refusal = mcpRefusal(call.mcpRequestId, error);
    if (refusal) res.status(200).json(refusal);
    return refusal !== undefined;
  }

  private async check(req: Request, call: CallContext, fresh: boolean): Promise<CheckedCall> {
    const target = parseRequestTarget(req.originalUrl);
    call.connectorId = target.connectorId;
    call.path = target.upstreamPath.slice(0, 512);
    // `x_http_method_override` is `X-HTTP-Method-Override` to Rack and CGI servers.
    for (const name of Object.keys(req.headers)) {
      if (isMethodOverrideHeader(name)) throw new InvalidRequestError(`the ${name} header is not accepted`, { reason: 'method_override' });
    }
    const headerProblem = uncheckedHeaderProblem(req.headers);
    if (headerProblem) throw new InvalidRequestError(headerProblem.description, { reason: headerProblem.reason });
    const queryNames = [...new URLSearchParams(target.query).keys()];
    if (queryNames.includes('access_token')) {
      throw new InvalidRequestError('access tokens are accepted in the Authorization header only', { reason: 'token_in_query' });
    }
    // Rails, Laravel and Symfony route `?_method=DELETE` (any case, `_method[]`) as a DELETE.
    if (queryNames.some((name) => parameterNameForms(name).includes(METHOD_PARAMETER))) {
      throw new InvalidRequestError('the _method query parameter is not accepted', { reason: 'method_override' });
    }
    call.remembered = false;
    const { state, detail } = await this.authenticate(req, target, call, fresh);
    const connector = state.connector!;
    if (connector.kind === 'mcp') return this.checkMcp(req, target, state, detail, call);
    const match = this.catalogue.match(connector.id, connector.operationsText, req.method, target.segments);
    if (match.kind === 'none') {
      throw new InsufficientScopeError(`no operation of connector ${connector.id} matches ${req.method} ${target.upstreamPath.slice(0, 200)}`, {
        rule: 'operation',
      });
    }
    if (match.kind === 'ambiguous') {
      throw new InsufficientScopeError(
        match.lenient
          ? `the path could be routed upstream to another operation than ${match.names[0]} (${match.names.slice(1).join(', ')}): a ";" parameter, case or ".suffix" in a segment`
          : `the request matches several operations (${match.names.join(', ')})`,
        { rule: 'operation', ...(match.lenient ? { reason: 'ambiguous_path' } : {}) },
      );
    }
    const { operation, pathParams } = match;
    call.operation = operation.name;
    if (!detail.actions.includes(operation.name)) {
      throw new InsufficientScopeError(`operation ${operation.name} is not granted by this credential`, { rule: 'action' });
    }
    const allowed = allowedRequestHeaders(operation);
    const unlisted = allowed && unlistedRequestHeader(req.rawHeaders, allowed);
    if (unlisted) {
      throw new InvalidFieldError(
        `header.${unlisted.slice(0, 256)}`,
        `the ${unlisted.slice(0, 256)} header is not accepted by operation ${operation.name} (not in its request_headers)`,
        'header_not_allowed',
      );
    }
    const body = await (call.body ??= readBody(req, this.config.gatewayBodyLimit));
    // A compressed body's parameter names cannot be read, and an upstream that decompresses
    // requests (ASP.NET's RequestDecompression, a proxy in front) could merge them with the query's.
    if (body.length > 0 && contentEncoded(req) && hasConstraints(operation, detail.constraints)) {
      throw new UnsupportedMediaTypeError(
        'a constraint applies: the body must not be content-encoded (no content-encoding, or identity)',
        'body_content_encoding',
      );
    }
    const parsed = needsBody(operation, detail.constraints) ? parseJsonBody(req, body) : undefined;
    // Names are read from the body's bytes as UTF-8; ASP.NET Core reads a form in the charset it
    // names (and binds form values before the query's), so `project=evil` in UTF-16 would pass unseen.
    if (!parsed && body.length > 0 && hasConstraints(operation, detail.constraints) && foreignCharset(req.headers['content-type'])) {
      throw new UnsupportedMediaTypeError('a constraint applies: the body must be in UTF-8 (no charset, charset=utf-8 or us-ascii)', 'body_charset');
    }
    const bodyNames = parsed ? objectKeys(parsed.value) : bodyMemberNames(req.headers['content-type'], body);
    if (bodyNames.some((name) => parameterNameForms(name).includes(METHOD_PARAMETER))) {
      throw new InvalidRequestError('the _method body member is not accepted', { reason: 'method_override' });
    }
    const result = checkConstraints(operation, detail.constraints, {
      pathParams,
      query: target.query,
      body: parsed?.value,
      bodyText: parsed?.text,
      bodyNames,
      rawHeaders: req.rawHeaders,
    });
    call.constraints = result.checked.map((entry) => ({ ...entry, granted: this.auditValue(entry.granted), actual: this.auditValue(entry.actual) }));
    if (result.invalid) throw new InvalidFieldError(result.invalid.field, result.invalid.description, 'inexact_number');
    if (result.failure) throw new InsufficientScopeError(result.failure.description, { rule: result.failure.rule, reason: result.failure.reason });
    return this.checked(target, state, operation, body, result);
  }

  /**
   * An `mcp` connector: the target is the connector itself; one JSON-RPC message, classified
   * (see {@link classifyMcpRequest}); a `tools/call` has its arguments checked against the
   * grant's constraints by the same engine as an HTTP body.
   */
  private async checkMcp(req: Request, target: RequestTarget, state: CredentialState, detail: ConnectorDetail, call: CallContext): Promise<CheckedCall> {
    if (target.upstreamPath !== '/' || target.query !== '') {
      throw new InvalidRequestError(`an MCP connector is called at /connectors/${target.connectorId} itself, without a path or query`, {
        reason: 'mcp_target',
      });
    }
    const body = await (call.body ??= readBody(req, this.config.gatewayBodyLimit));
    const parsed = req.method === 'POST' ? (parseJsonBody(req, body) ?? { value: undefined, text: '' }) : undefined;
    if (req.method !== 'POST' && body.length > 0)
      throw new InvalidRequestError(`an MCP ${req.method} request carries no body`, { reason: 'mcp_body_not_allowed' });
    call.mcpMethod = req.method === 'POST' ? 'message' : req.method;
    call.mcpRequestId = requestIdOf(parsed?.value);
    // What the session may see: the tools its task allows here (tool lists on POST answers and on
    // the event stream), as the verified task row declares them.
    const visible =
      req.method === 'GET' || (parsed?.value as { method?: unknown } | undefined)?.method === 'tools/list'
        ? state.taskId
          ? state.declaredActions
          : detail.actions
        : detail.actions;
    const mcp = classifyMcpRequest(req.method, parsed?.value, parseToolCatalogue(state.connector!.operationsText), detail.actions, visible);
    call.mcpMethod = mcp.method;
    if (mcp.tool) call.operation = mcp.tool.name;
    const unlisted = mcp.headers && unlistedRequestHeader(req.rawHeaders, mcp.headers);
    if (unlisted) {
      throw new InvalidFieldError(
        `header.${unlisted.slice(0, 256)}`,
        `the ${unlisted.slice(0, 256)} header is not accepted by ${mcp.tool ? `tool ${mcp.tool.name}` : `an MCP ${mcp.method} message`} (not in request_headers)`,
        'header_not_allowed',
      );
    }
    await this.checkMcpSession(req, target.connectorId, state);
    if (!mcp.tool) return { ...(await this.checked(target, state, undefined, body, { checked: [] })), mcp };
    const result = checkConstraints(mcp.tool, detail.constraints, { pathParams: {}, query: '', body: parsed!.value, bodyText: parsed!.text });
    call.constraints = result.checked.map((entry) => ({ ...entry, granted: this.auditValue(entry.granted), actual: this.auditValue(entry.actual) }));
    if (result.invalid) throw new InvalidFieldError(result.invalid.field, result.invalid.description, 'inexact_number');
    if (result.failure) throw new InsufficientScopeError(result.failure.description, { rule: result.failure.rule, reason: result.failure.reason });
    return { ...(await this.checked(target, state, mcp.tool, body, result)), mcp };
  }

  /**
   * The upstream tells sessions apart by `Mcp-Session-Id` alone (every agent reaches it with the
   * one connector credential): a session id is honoured only for the task that opened it.
   */
  private async checkMcpSession(req: Request, connectorId: string, state: CredentialState): Promise<void> {
    const session = req.headers['mcp-session-id'];
    if (session === undefined) return;
    if (typeof session !== 'string' || session.length === 0 || session.length > 256) {
      throw new InvalidRequestError('the Mcp-Session-Id header is not valid', { reason: 'mcp_session_id' });
    }
    const owner = await this.mcpSessions.owner(connectorId, session);
    if (owner === undefined || owner !== state.taskId) {
      throw new InsufficientScopeError('this MCP session was not opened through the gateway by this task', { rule: 'mcp_session' });
    }
  }

  /** The last steps of every check: the destination still allowed, the upstream credential ready. */
  private async checked(
    target: RequestTarget,
    state: CredentialState,
    operation: ConnectorOperation | undefined,
    body: Buffer,
    result: { checked: CheckedConstraint[]; headers?: Record<string, string> },
  ): Promise<CheckedCall> {
    const connector = state.connector!;
    const refused = this.destinationRefusal(connector.baseUrl);
    if (refused)
      throw new BadGatewayError(`the upstream of connector ${connector.id} is not reachable from the gateway: ${refused}`, {
        reason: 'upstream_address_refused',
      });
    const sealed: SealedCredential = {
      connectorId: connector.id,
      baseUrl: connector.baseUrl,
      type: connector.credentialType,
      sealed: connector.credentialSealed,
      fingerprint: connector.credentialFingerprint,
      user: state.taskUser,
    };
    const credential = await this.credentials.headerFor(sealed);
    const values = Object.fromEntries(result.checked.map((entry) => [entry.name, entry.actual]));
    return { target, state, operation, body, sealed, credential, values, ...(result.headers ? { headers: result.headers } : {}) };
  }

  /** The token: signature, `typ`, `exp`, `aud` = this connector; then its live state in PostgreSQL. */
  private async authenticate(
    req: Request,
    target: RequestTarget,
    call: CallContext,
    fresh: boolean,
  ): Promise<{ state: CredentialState; detail: ConnectorDetail }> {
    const header = req.headers.authorization ?? '';
    const match = /^(Bearer|DPoP) ([A-Za-z0-9\-._~+/]+=*)$/i.exec(header);
    if (!match) {
      throw new InvalidTokenError(header ? 'the Authorization header is not a Bearer or DPoP token' : 'an access token is required', {
        reason: header ? 'malformed_authorization' : 'no_token',
      });
    }
    const scheme = match[1].toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
    const token = match[2];
    let claims: Record<string, unknown>;
    try {
      const verified = await this.keys.verify(token, {
        typ: ACCESS_TOKEN_TYP,
        audience: `${this.config.gatewayUrl}/connectors/${target.connectorId}`,
      });
      claims = verified.payload;
    } catch (error) {
      if (error instanceof TemporarilyUnavailableError) throw error;
      const code = (error as { code?: string }).code;
      throw new InvalidTokenError(code === 'ERR_JWT_EXPIRED' ? 'the access token has expired' : 'the access token is not valid for this connector', {
        reason: code ?? 'token_invalid',
      });
    }
    await (call.possession ??= this.checkPossession(req, scheme, token, claims));
    call.jti = String(claims.jti);
    // A credential acting for a user carries the agent in `act.sub` (RFC 8693 section 4.1).
    const actor = (claims.act as { sub?: unknown } | undefined)?.sub ?? claims.sub;
    call.agentId = typeof actor === 'string' ? actor : undefined;
    call.taskId = typeof claims.task_id === 'string' ? claims.task_id : null;
    const details = claims.authorization_details as ConnectorDetail[] | undefined;
    const detail = Array.isArray(details) && details.length === 1 ? details[0] : undefined;
    if (!detail || detail.connector !== target.connectorId || !Array.isArray(detail.actions)) {
      throw new InvalidTokenError('the access token does not carry a grant for this connector', { reason: 'no_grant' });
    }
    const signed = signedLimitsOf(claims);
    if (!signed) throw new InvalidTokenError('the access token is not valid for this connector', { reason: 'token_invalid' });
    const read = await this.states.state(call.jti, fresh);
    call.remembered = read?.remembered === true;
    if (!read) throw new InvalidTokenError('the access token is not known to this authority', { reason: 'unknown_jti' });
    // The row's use limit and budget charge (not tagged) count only as far as the token signs them.
    const state = boundBySignedLimits(read, signed);
    // The credential's row (not tagged) names the task the token was signed for: a row moved to
    // another task (another user's) in SQL does not lend it that task's standing.
    if (state.taskId !== call.taskId) throw new InvalidTokenError('the access token is not known to this authority', { reason: 'unknown_jti' });
    const ended = endedRefusal(state);
    if (ended) throw ended;
    if (!state.connector || state.connector.id !== target.connectorId) {
      throw new InvalidTokenError('the connector of this credential no longer exists', { reason: 'connector_gone' });
    }
    if (state.maxUses !== null && state.uses >= state.maxUses) {
      throw new InvalidTokenError('the use budget of this credential is spent', { reason: 'budget_spent' });
    }
    return { state, detail };
  }

  /**
   * RFC 9449 at the resource server: a DPoP-bound token (`cnf.jkt`) is accepted only with the
   * `DPoP` scheme and a fresh, unused proof for this request, made with the bound key and
   * carrying the token's hash; an unbound token only as `Bearer`.
   */
  private async checkPossession(req: Request, scheme: 'Bearer' | 'DPoP', token: string, claims: Record<string, unknown>): Promise<void> {
    const jkt = (claims.cnf as { jkt?: unknown } | undefined)?.jkt;
    const dpopChallenge = { scheme: 'DPoP' as const, algs: DPOP_SIGNING_ALGS };
    if (typeof jkt !== 'string') {
      if (scheme === 'DPoP') throw new InvalidTokenError('this access token is not DPoP-bound: present it as a Bearer token', { reason: 'dpop_unbound' });
      return;
    }
    if (scheme !== 'DPoP') {
      throw new InvalidTokenError('this access token is DPoP-bound: present it with the DPoP scheme and a proof', {
        ...dpopChallenge,
        reason: 'dpop_required',
      });
    }
    const url = `${this.config.gatewayUrl}${req.originalUrl.split('?')[0]}`;
    const proof = await checkDpopProof(this.jtis, req.headers.dpop, { method: req.method, url, accessToken: token, resourceServer: true });
    if (proof.jkt !== jkt) {
      throw new InvalidDpopProofError('the DPoP proof is not made with the key this token is bound to', {
        resourceServer: true,
        algs: DPOP_SIGNING_ALGS,
        reason: 'dpop_key_mismatch',
      });
    }
  }

  /**
   * Spends one use (or, without a budget, re-checks the credential) and commits the call's
   * audit event in the same transaction, before anything is forwarded. A credential charged
   * to task budgets (`limits`) also reserves its call there: see {@link spendWithBudget}.
   * The spending statement also checks that the connector is still the one the call was
   * checked against. A call checked on a remembered state that is no longer good, or against a
   * connector changed since, records nothing and is checked again (`retry`).
   */
  private async spend(checked: CheckedCall, call: CallContext): Promise<SpendOutcome> {
    const { jti, maxUses, budgetEntries, remembered } = checked.state;
    const connectorVersion = checked.state.connector!.version;
    const allowed = this.event(call, 'gateway.call', 'success', {
      max_uses: maxUses,
      // A user's token due for its refresh, sent as it is (still valid) because the refresh failed or is backing off.
      ...(checked.credential?.unrefreshed ? { upstream_token_unrefreshed: checked.credential.unrefreshed } : {}),
    });
    const refused = this.event(call, 'gateway.call', 'denied', { status: 401, error: 'invalid_token', reason: 'revoked_or_spent_concurrently' });
    const eventsFor = (verdict: SpendVerdict, success: AuditEventInput): AuditEventInput[] =>
      verdict === 'live' ? [success] : checkAgain(verdict, remembered) ? [] : [refused];
    if ((checked.mcp && !checked.mcp.spends) || (maxUses === null && (budgetEntries === null || budgetEntries.length === 0))) {
      // Without a use budget (MCP session traffic, initialize, tools/list... included): re-checked, audited, nothing written.
      const { result: verdict } = await this.audit.recordWithBatched(
        { kind: 'gateway-recheck', params: { jti, connectorVersion }, run: this.grants.recheckAt, inline: this.grants.recheckInline },
        (live) => eventsFor(live, allowed),
      );
      return spendOutcome(verdict, remembered);
    }
    if (budgetEntries !== null && budgetEntries.length > 0) return this.spendWithBudget(checked, call, allowed, refused);
    // The calls of one batch spend their uses in one statement, in their order (same credential
    // included); each says what it expects to leave, so that its batch can go as one message.
    const expectedUses = this.forecast.next(jti);
    let left: number | undefined;
    try {
      const { result: spent } = await this.audit.recordWithBatched(
        { kind: 'gateway-spend', params: { jti, connectorVersion, expectedUses, maxUses }, run: this.grants.spendAt, inline: this.grants.spendInline },
        (outcome) => eventsFor(outcome.verdict, outcome.verdict === 'live' ? { ...allowed, data: { ...allowed.data, uses: outcome.uses } } : allowed),
      );
      if (spent.verdict === 'live') left = spent.uses;
      return spendOutcome(spent.verdict, remembered);
    } finally {
      this.forecast.settle(jti, left);
    }
  }

  /**
   * For a credential charged to task budgets: in one transaction with the call's audit event,
   * reserve the call on every budget (one conditional statement, all or nothing, across
   * instances), then spend the use or re-check the credential; a credential found revoked or
   * spent gives the reservation back in that same transaction. A budget that would be exceeded
   * refuses the call (403, rule `limit:calls` or `limit:sum:<name>`) and spends nothing. A call
   * checked on a remembered state reserves nothing unless that state is still good.
   */
  private async spendWithBudget(checked: CheckedCall, call: CallContext, allowed: AuditEventInput, refused: AuditEventInput): Promise<SpendOutcome> {
    const { jti, maxUses, taskId, remembered } = checked.state;
    const check = { jti, connectorVersion: checked.state.connector!.version, maxUses };
    const { result } = await this.audit.recordWith(
      async (client) => {
        if (remembered && (await this.grants.recheckAt(client, [check]))[0] !== 'live') return { again: true };
        const reserved = await this.grants.reserve(client, taskId!, checked.state.budgetEntries!, checked.values, checked.state.declaredBudgets);
        if (!reserved.ok) return { refusal: reserved };
        const live = maxUses === null ? { verdict: (await this.grants.recheckAt(client, [check]))[0] } : (await this.grants.spendAt(client, [check]))[0];
        if (live.verdict !== 'live') {
          await this.grants.release(client, reserved.reservation);
          return checkAgain(live.verdict, remembered) ? { again: true } : { revoked: true };
        }
        return { reservation: reserved.reservation, uses: 'uses' in live ? live.uses : undefined };
      },
      (outcome) => {
        if (outcome.again) return [];
        if (outcome.refusal) {
          const { rule, description } = outcome.refusal;
          return [this.event(call, 'gateway.call', 'denied', { status: 403, error: 'insufficient_scope', error_description: description, rule })];
        }
        if (!outcome.reservation) return [refused];
        return [{ ...allowed, data: { ...allowed.data, ...(outcome.uses !== undefined ? { uses: outcome.uses } : {}), budget: outcome.reservation.rules } }];
      },
    );
    if (result.again) return { retry: true };
    if (result.refusal) throw new InsufficientScopeError(result.refusal.description, { rule: result.refusal.rule });
    if (!result.reservation) throw new InvalidTokenError('the access token was revoked or its use budget spent', { reason: 'revoked_or_spent' });
    return { retry: false, reservation: result.reservation };
  }

  private async forward(req: Request, res: Response, checked: CheckedCall, call: CallContext, reservation?: BudgetReservation): Promise<void> {
    const { target, body, sealed } = checked;
    const base = checked.state.connector!.baseUrl.replace(/\/+$/, '');
    // An MCP connector's base_url is its endpoint: the target was proven to be the connector itself.
    const url = checked.mcp ? checked.state.connector!.baseUrl : `${base}${target.upstreamPath}${target.query ? `?${target.query}` : ''}`;
    const deadline = AbortSignal.timeout(this.config.upstreamTimeoutMs);
    const send = (credential: CredentialHeader | undefined) =>
      inSpan(
        'gateway.upstream',
        { 'writ.connector': call.connectorId ?? 'none', 'http.request.method': req.method },
        () =>
          undiciRequest(url, {
            method: req.method,
            dispatcher: this.dispatcher,
            headers: withTraceContext(
              upstreamRequestHeaders(
                req.headers,
                credential,
                body.length,
                checked.headers,
                checked.mcp ? checked.mcp.headers : checked.operation ? allowedRequestHeaders(checked.operation) : undefined,
              ),
              this.config.tracing.forwardTraceparent,
            ),
            body: body.length > 0 ? body : undefined,
            signal: deadline,
          }),
        SpanKind.CLIENT,
      );
    const upstreamStarted = process.hrtime.bigint();
    let response: Dispatcher.ResponseData;
    // Header values injected upstream (a user's own access token included): never echoed back to the agent.
    const injected = checked.credential ? [checked.credential.value.replace(/^Bearer /, '')] : [];
    // Once the upstream has answered one send of this call, the request has reached it: a resend
    // that then cannot connect does not give the reservation back.
    let reached = false;
    try {
      let sentWith: CredentialHeader | undefined = checked.credential;
      response = await send(sentWith);
      reached = true;
      if (response.statusCode === 401 && this.credentials.isRefreshable(sealed)) {
        // The upstream refused its token before acting on the request: refresh once (only the
        // refused token, within the limits of the credential's type) and resend.
        await response.body.dump();
        // A refresh that fails is answered as on the first send (503, 403...), not as the upstream's 502.
        const fresh = await this.credentials.headerFor(sealed, checked.credential).catch((error: unknown) => {
          this.credentials.refused(error);
          return Promise.reject(refreshFailure(error));
        });
        injected.push(fresh.value.replace(/^Bearer /, ''));
        // The refresh may have taken seconds (a provider, another caller's lease): a revocation
        // answered meanwhile must not see the call sent again after its answer.
        await this.stillLive(checked.state.jti);
        sentWith = fresh;
        response = await send(fresh);
      }
      // Taken by the upstream: a later 401 for it is a revocation, refetched at once.
      if (response.statusCode < 400) this.credentials.accepted(sealed, sentWith);
    } catch (error) {
      const failure = sendFailure(error, deadline);
      const failed = this.event(call, 'gateway.upstream', 'failure', { status: failure.status, error: failure.error, reason: failure.reason });
      // The request never left (no connection, and no earlier send of it answered): the call's
      // budget reservation is given back.
      const release = reservation && !reached && neverSent(error) ? reservation : undefined;
      await (
        release
          ? this.audit.recordWith(
              (client) => this.grants.release(client, release),
              () => [failed, this.event(call, 'gateway.budget_released', 'info', { reason: failure.reason, budget: release.rules })],
            )
          : this.audit.record(failed)
      ).catch((auditError: unknown) => this.logger.error({ err: String(auditError) }, 'could not record an upstream failure'));
      throw failure;
    }
    const secrets = [...new Set([...this.credentials.secretsOf(sealed), ...injected.filter((secret) => secret.length >= 8)])];
    // Every form the body redactor masks (URL-encoded in a Location, base64...) also drops a header.
    const forms = secrets.length > 0 ? redactionSecrets(secrets) : [];
    const headers = agentResponseHeaders(
      response.headers,
      forms.map((form) => form.toString('utf8')),
    );
    const searched = secrets.length > 0 && mayHaveBody(req.method, response.statusCode);
    const encoding = searched ? encodedBody(response.headers) : undefined;
    const transferCoding = searched ? compressedTransfer(response.headers) : undefined;
    // Asked for identity, the upstream compressed anyway (as a content or, offered none in TE, a
    // transfer coding, which undici passes on as it came); or asked for no range (Range is not
    // forwarded with a credential), it sent a part: a body that cannot be searched for whole
    // occurrences of the credential is not passed on. The request was sent: its budget
    // reservation is kept.
    const unreadable =
      encoding !== undefined || transferCoding !== undefined
        ? {
            description: 'the upstream answered with a compressed body, which the gateway does not pass on (it asks for identity)',
            reason: 'upstream_content_encoding',
            detail: encoding !== undefined ? { content_encoding: encoding } : { transfer_encoding: transferCoding },
          }
        : secrets.length > 0 && response.statusCode === 206
          ? {
              description: 'the upstream answered with a part of its body (206), which the gateway does not pass on (it asks for the whole body)',
              reason: 'upstream_partial_content',
              detail: {},
            }
          : undefined;
    if (unreadable) {
      await response.body.dump().catch(() => undefined);
      const refusal = new BadGatewayError(unreadable.description, { reason: unreadable.reason });
      await this.audit
        .record(
          this.event(call, 'gateway.upstream', 'failure', {
            status: refusal.status,
            upstream_status: response.statusCode,
            error: refusal.error,
            reason: refusal.reason,
            ...unreadable.detail,
            upstream_latency_ms: elapsedMs(upstreamStarted),
          }),
        )
        .catch((auditError: unknown) => this.logger.error({ err: String(auditError) }, 'could not record an upstream failure'));
      throw refusal;
    }
    const session = headers['mcp-session-id'];
    if (checked.mcp?.method === 'initialize' && typeof session === 'string' && checked.state.taskId) {
      // Bound before the agent learns the id; if it cannot be recorded, the agent does not get it.
      await this.mcpSessions.bind(target.connectorId, session, checked.state.taskId, call.agentId ?? '').catch(async (error: unknown) => {
        await response.body.dump().catch(() => undefined);
        throw error;
      });
    }
    const ended = req.headers['mcp-session-id'];
    if (checked.mcp?.method === 'DELETE' && response.statusCode < 300 && typeof ended === 'string' && checked.state.taskId) {
      await this.mcpSessions
        .unbind(target.connectorId, ended, checked.state.taskId)
        .catch((error: unknown) => this.logger.warn({ err: String(error) }, 'could not forget an ended MCP session'));
    }
    let bytes = 0;
    response.body.on('data', (chunk: Buffer) => (bytes += chunk.length));
    let streamError: string | undefined;
    // What the agent gets instead when the answer broke off before a byte of it (headers
    // included) was sent: the gateway can still say why (504 past the deadline, else 502).
    let answered: OAuthError | undefined;
    // Every occurrence of a secret in the body is masked with as many bytes as it has (so
    // Content-Length holds), last, on the bytes exactly as the agent gets them.
    const redactor = forms.length > 0 ? new SecretRedactor(forms) : undefined;
    try {
      // MCP: tool lists are cut to the granted tools (JSON read whole, SSE event by event).
      const body = checked.mcp ? await mcpResponseBody(response.body, headers, checked.mcp) : response.body;
      res.status(response.statusCode);
      for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
      await relay(body, res, redactor);
    } catch (error) {
      streamError = streamErrorCode(error, deadline);
      answered = res.headersSent || res.destroyed ? undefined : brokenAnswerFailure(error, streamError);
      if (answered) {
        // The upstream's headers were only staged: none of them goes with the gateway's error, and
        // the platform's own that one of them replaced comes back (Cache-Control the filter sets).
        for (const name of Object.keys(headers)) res.removeHeader(name);
        res.setHeader('X-Content-Type-Options', 'nosniff');
      } else {
        res.destroy();
      }
    }
    const redacted = redactor?.count ?? 0;
    if (redacted > 0)
      this.logger.warn({ connector: call.connectorId, operation: call.operation, redacted }, 'an upstream response echoed its credential: masked');
    // The agent has its answer: the outcome rides with the next batch instead of taking a commit
    // of its own that the next call's spend would queue behind.
    this.audit
      .recordLater(
        this.event(call, 'gateway.upstream', streamError ? 'failure' : 'success', {
          ...(answered ? { status: answered.status, upstream_status: response.statusCode } : { status: response.statusCode }),
          bytes,
          upstream_latency_ms: elapsedMs(upstreamStarted),
          ...(streamError ? { error: streamError } : {}),
          ...(redacted > 0 ? { redacted } : {}),
        }),
      )
      .catch((error: unknown) => this.logger.error({ err: String(error) }, 'could not record an upstream response'));
    // Answered by the exception filter, as an upstream failure before the headers is.
    if (answered) throw answered;
  }

  /**
   * Reads the credential again (not from memory) before a call is sent a second time: refused
   * as {@link authenticate} refuses it when it was revoked, or its task ended, since it was spent.
   * PostgreSQL out of reach: `503` (nothing is sent).
   */
  private async stillLive(jti: string): Promise<void> {
    let state: CredentialState | undefined;
    try {
      state = await this.states.state(jti, true);
    } catch (error) {
      if (!isConnectionError(error)) throw error;
      throw new TemporarilyUnavailableError('the credential could not be checked again before the call was resent; retry later', {
        reason: 'database_unavailable',
        cause: error,
      });
    }
    const refusal = state ? endedRefusal(state) : new InvalidTokenError('the access token is not known to this authority', { reason: 'unknown_jti' });
    if (refusal) throw refusal;
  }

  /**
   * A refusal with a verified token is one audit event. Without one (no, malformed or invalid
   * token, or a target refused before it), it is counted per source address across instances:
   * audited one by one only up to the per-window cap (then summarised), and `429` past the limit.
   */
  private async refused(call: CallContext, error: OAuthError, source: string): Promise<void> {
    if (call.agentId) {
      await this.recordRefusal(call, error);
      return;
    }
    const verdict = await this.throttle.failure('gateway', source);
    if (verdict.audit) await this.recordRefusal(call, error);
    if (verdict.limited) throw tooManyFailures(verdict);
  }

  private async recordRefusal(call: CallContext, error: OAuthError): Promise<void> {
    await this.audit.record(
      this.event(call, 'gateway.call', error.status >= 500 ? 'failure' : 'denied', {
        status: error.status,
        error: error.error,
        error_description: error.description,
        ...(error instanceof InsufficientScopeError ? { rule: error.rule } : {}),
        ...(error.reason ? { reason: error.reason } : {}),
      }),
    );
  }

  private event(call: CallContext, type: string, outcome: AuditEventInput['outcome'], extra: Record<string, unknown>): AuditEventInput {
    return {
      type,
      outcome,
      actor: call.agentId ? { type: 'agent', id: call.agentId } : { type: 'anonymous' },
      agentId: call.agentId ?? null,
      taskId: call.taskId ?? null,
      connectorId: call.connectorId,
      data: {
        method: call.method,
        path: call.path,
        ...(call.jti ? { jti: call.jti } : {}),
        ...(call.operation ? { operation: call.operation } : {}),
        ...(call.mcpMethod ? { mcp_method: call.mcpMethod } : {}),
        ...(call.constraints ? { constraints: call.constraints } : {}),
        latency_ms: elapsedMs(call.started),
        ...extra,
      },
    };
  }

  /**
   * Strings (account references, repository names...) enter the audit log as keyed HMACs; numbers
   * stay readable. An array keeps its first {@link AUDIT_ARRAY_ELEMENTS} elements and says how
   * many more there were: the agent chooses its length, and each one-letter string would become
   * a 76-character HMAC (a 1 MiB body, some 20 MB in each of two events, for a refused call).
   * Constraint values are scalars or flat arrays of them, so a nested array is `[array]`.
   */
  private auditValue(value: unknown): unknown {
    if (typeof value === 'string') return `hmac-sha256:${this.master.auditHmac(value)}`;
    if (Array.isArray(value)) {
      const shown = value.slice(0, AUDIT_ARRAY_ELEMENTS).map((element) => (Array.isArray(element) ? '[array]' : this.auditValue(element)));
      return value.length > AUDIT_ARRAY_ELEMENTS ? [...shown, `[${value.length - AUDIT_ARRAY_ELEMENTS} more]`] : shown;
    }
    if (value !== null && typeof value === 'object') return '[object]';
    return value;
  }
}

/** The elements of an array constraint value an audit event records (see `auditValue`). */
const AUDIT_ARRAY_ELEMENTS = 32;

const NO_BODY = Buffer.alloc(0);

async function readBody(req: Request, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new PayloadTooLargeError(limit);
  // Without Content-Length or Transfer-Encoding an HTTP/1.1 request has no body (RFC 9112 section 6.3).
  if (req.headers['transfer-encoding'] === undefined && (req.headers['content-length'] === undefined || declared === 0)) return NO_BODY;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new PayloadTooLargeError(limit);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

/**
 * Streams the upstream body to the agent, with backpressure; settles when the agent's response
 * has finished, or fails with either side's error or with `ERR_STREAM_PREMATURE_CLOSE` when the
 * agent's connection closes first (the upstream body is then destroyed; the caller destroys the
 * agent's response). What `stream.pipeline` (an AbortController per call) or `pipe` and
 * `finished` do, with a third of their listeners: they were ~5% of a call. The `redactor`
 * masks secrets chunk by chunk here rather than as a Transform stream of its own, which would
 * add a stream and its listeners to every call.
 */
function relay(body: Readable, res: Response, redactor?: SecretRedactor): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const resume = () => body.resume();
    const settle = (error?: Error) => {
      if (settled) return;
      settled = true;
      res.off('drain', resume);
      if (error) {
        body.destroy();
        reject(error);
      } else {
        resolve();
      }
    };
    body.on('data', (chunk: Buffer) => {
      const out = redactor ? redactor.push(chunk) : chunk;
      if (out.length > 0 && !res.write(out)) body.pause();
    });
    body.once('end', () => {
      const tail = redactor?.flush();
      if (tail && tail.length > 0) res.end(tail);
      else res.end();
    });
    body.once('error', settle);
    res.on('drain', resume);
    res.once('error', settle);
    res.once('finish', () => settle());
    res.once('close', () => settle(res.writableFinished ? undefined : prematureClose()));
    // The agent may have gone while the upstream answered: its 'close' has already been emitted.
    if (res.destroyed) settle(prematureClose());
  });
}

/** Whether a response to `method` with `status` carries a body (RFC 9110 sections 9.3.2, 15.3.5, 15.4.5). */
function mayHaveBody(method: string, status: number): boolean {
  return method !== 'HEAD' && status !== 204 && status !== 304 && status >= 200;
}

/**
 * What `gateway.upstream` records as `error` when the answer broke off while it was relayed:
 * `upstream_timeout` when `WRIT_UPSTREAM_TIMEOUT_MS` ran out mid-body (undici ends the body with
 * the deadline's own reason, a `TimeoutError` whose legacy numeric `code` is 23, which says
 * nothing; or, when the upstream had stopped sending, with the dispatcher's body timeout, which
 * is the same setting counted from the last chunk, and the two timers race), else the stream's
 * code (`ERR_STREAM_PREMATURE_CLOSE`, `ECONNRESET`...).
 */
function streamErrorCode(error: unknown, deadline: AbortSignal): string {
  if (deadline.aborted && error === deadline.reason) return 'upstream_timeout';
  if (error instanceof McpFilterError) return 'mcp_message_too_large';
  const code = (error as { code?: unknown } | undefined)?.code;
  if (code === 'UND_ERR_BODY_TIMEOUT') return 'upstream_timeout';
  return typeof code === 'string' ? code : 'stream_error';
}

/**
 * The error that answers an upstream answer broken off before anything of it reached the agent
 * (a JSON answer read whole, e.g. an MCP tool list; a body whose first byte never came):
 * `504 gateway_timeout` when `WRIT_UPSTREAM_TIMEOUT_MS` passed, `502 bad_gateway` when the
 * upstream closed or reset its stream or sent a tool list too large to filter; `undefined` when
 * the agent itself went away (nobody to answer).
 */
function brokenAnswerFailure(error: unknown, code: string): OAuthError | undefined {
  if (code === 'ERR_STREAM_PREMATURE_CLOSE') return undefined;
  if (code === 'upstream_timeout') return new GatewayTimeoutError(undefined, { reason: code });
  if (error instanceof McpFilterError) return new BadGatewayError(error.message, { reason: code });
  return new BadGatewayError('the upstream API broke off its answer', { reason: code });
}

function prematureClose(): Error {
  return Object.assign(new Error('the agent closed the connection before the response was sent'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/** Whether the request body is sent with a `Content-Encoding` other than `identity`. */
function contentEncoded(req: Request): boolean {
  const encoding = req.headers['content-encoding'];
  return encoding !== undefined && encoding.trim().toLowerCase() !== 'identity';
}

/** Whether a content type names a charset other than UTF-8 (or its subset US-ASCII), in any of its `charset` parameters. */
function foreignCharset(contentType: string | undefined): boolean {
  for (const match of (contentType ?? '').matchAll(/(?:^|[;,\s])charset\s*=\s*"?([^";,\s]*)/gi)) {
    if (!/^(?:utf-?8|us-ascii)$/i.test(match[1])) return true;
  }
  return false;
}

/** The body as JSON (its value and its text, to read numbers as written), or `undefined` when there is none. */
function parseJsonBody(req: Request, body: Buffer): { value: unknown; text: string } | undefined {
  if (body.length === 0) return undefined;
  // The bytes are checked as they came and forwarded with their Content-Encoding: an encoded
  // body would be checked as one text and decoded by the upstream as another.
  if (contentEncoded(req)) {
    throw new UnsupportedMediaTypeError(
      'a body constraint applies: the body must not be content-encoded (no content-encoding, or identity)',
      'body_content_encoding',
    );
  }
  const type = req.headers['content-type'] ?? '';
  if (!JSON_TYPE.test(type)) {
    // XML, forms, multipart, text, no type, another charset: the checks read JSON only, and a body
    // they cannot read would let its constrained fields through unchecked.
    throw new UnsupportedMediaTypeError(
      'a body constraint applies: the body must be application/json or a +json type, in UTF-8 (content-type application/json)',
      'body_content_type',
    );
  }
  try {
    const text = utf8.decode(body);
    return { value: parseStrictJson(text), text };
  } catch (error) {
    if (error instanceof StrictJsonError && error.field) throw new InvalidFieldError(error.field, error.message, 'body_not_strict_json');
    throw new InvalidRequestError(error instanceof StrictJsonError ? error.message : 'the body is not valid UTF-8', { reason: 'body_not_strict_json' });
  }
}

/**
 * Connection failures: the request provably never reached the upstream (a timeout after sending
 * does not qualify). A host name refused on its resolved address (`WRIT_UPSTREAM_ALLOWED_NETWORKS`)
 * is refused before any socket is opened.
 */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  UPSTREAM_ADDRESS_REFUSED,
]);

function neverSent(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
  return code !== undefined && NOT_SENT_CODES.has(code);
}

/** The refusal of a credential that was revoked, has expired, or whose task ended; undefined while it is live. */
function endedRefusal(state: CredentialState): InvalidTokenError | undefined {
  if (state.revoked) return new InvalidTokenError('the access token has been revoked', { reason: 'revoked' });
  if (state.expired) return new InvalidTokenError('the access token has expired', { reason: 'expired' });
  if (state.taskStatus !== 'active' || state.taskExpired) {
    return new InvalidTokenError(`the task of this credential is ${state.taskStatus === 'active' ? 'expired' : (state.taskStatus ?? 'gone')}`, {
      reason: 'task_ended',
    });
  }
  return undefined;
}

/** A verdict that sends the call through again instead of refusing it: a changed connector, or a remembered state no longer good. */
function checkAgain(verdict: SpendVerdict, remembered: boolean | undefined): boolean {
  return verdict === 'stale' || (verdict === 'dead' && remembered === true);
}

/** Forward, check again, or refuse (the refusal's event is already committed). */
function spendOutcome(verdict: SpendVerdict, remembered: boolean | undefined): SpendOutcome {
  if (verdict === 'live') return { retry: false };
  if (checkAgain(verdict, remembered)) return { retry: true };
  throw new InvalidTokenError('the access token was revoked or its use budget spent', { reason: 'revoked_or_spent' });
}

function tooManyFailures(verdict: FailureVerdict): TooManyRequestsError {
  return new TooManyRequestsError(verdict.retryAfterSeconds, 'too many refused calls from this address', { reason: 'throttled' });
}

/**
 * What answers (and `gateway.upstream` records) a send that failed before the upstream's headers:
 * `504` with reason `upstream_timeout` once `WRIT_UPSTREAM_TIMEOUT_MS` has passed, whichever
 * timer saw it first: the deadline's own, or the dispatcher's headers (or body) timeout, the same
 * setting on undici's coarse timers (past 1 s they tick every half second and may fire up to a
 * tick early, so they often win the race); else {@link upstreamFailure}.
 */
function sendFailure(error: unknown, deadline: AbortSignal): OAuthError {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (deadline.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new GatewayTimeoutError(undefined, { reason: 'upstream_timeout' });
  }
  return upstreamFailure(error);
}

function upstreamFailure(error: unknown): OAuthError {
  // The gateway's own refusals (a failed credential refresh on the resend after a 401) keep their status and reason.
  if (error instanceof OAuthError) return error;
  if ((error as { code?: string }).code === UPSTREAM_ADDRESS_REFUSED) {
    return new BadGatewayError('the upstream address is not reachable from the gateway (WRIT_UPSTREAM_ALLOWED_NETWORKS): nothing was sent', {
      reason: 'upstream_address_refused',
    });
  }
  const code = (error as { code?: string; name?: string }).code ?? (error as { name?: string }).name ?? 'unknown';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'TimeoutError' || code === 'AbortError') {
    return new GatewayTimeoutError(undefined, { reason: code });
  }
  return new BadGatewayError(undefined, { reason: code });
}

/**
 * A credential refresh that failed on the resend after an upstream 401, as the first send would
 * answer it: the gateway's own refusals as they are; the database or audit log out of reach as
 * 503 `temporarily_unavailable` (what the exception filter answers for them).
 */
function refreshFailure(error: unknown): unknown {
  if (error instanceof OAuthError) return error;
  if (error instanceof AuditUnavailableError || isConnectionError(error)) {
    return new TemporarilyUnavailableError('the upstream credential could not be refreshed right now; retry later', {
      reason: 'database_unavailable',
      cause: error,
    });
  }
  return error;
}
