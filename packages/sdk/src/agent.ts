import * as oauth from 'oauth4webapi';
import { WritClient, type WritClientOptions } from './client.js';
import { ApprovalTimeoutError, GatewayPathError, WritError, WritOAuthError, WritTimeoutError } from './errors.js';
import { gatewayUrlFor } from './gateway-path.js';
import { hideSecrets, INSPECT, redactedView } from './redact.js';
import { lifetimeMs, refreshAtFor } from './lifetime.js';
import { IDEMPOTENT_METHODS, retryDelayMs, sleep } from './retry.js';
import { anySignal, checkTimeout } from './signals.js';
import type { AuthorizationDetail, ConnectorRequest } from './types.js';

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';

/** Options of an {@link Agent}. */
export interface AgentOptions extends WritClientOptions {
  /** Base URL of the connector gateway (`WRIT_GATEWAY_URL`): credentials are only ever sent there. */
  gatewayUrl: string;
  /**
   * Bind credentials to a key of this agent (RFC 9449 DPoP, default `true`): a per-agent
   * ES256 key pair whose private half cannot be exported; every gateway call carries a
   * fresh proof. A leaked credential is then useless without the key.
   */
  dpop?: boolean;
  /** How long {@link Agent.credential} waits for a human approval, default 5 minutes. */
  approvalTimeoutMs?: number;
}

/** A connector credential obtained by token exchange. */
export interface Credential {
  accessToken: string;
  /** `DPoP` when bound to the agent's key, else `Bearer`. */
  tokenType: 'DPoP' | 'Bearer';
  /** When it expires (epoch milliseconds). */
  expiresAt: number;
  /** The one `authorization_details` entry it carries, as granted. */
  authorizationDetails: AuthorizationDetail[];
}

/** Called when a request waits for a human approval (each time the server says it still does). */
export interface PendingApproval {
  approvalId: string;
  /** The policy's reasons for asking a human. */
  reasons: string[];
  /** Seconds until the next poll. */
  interval: number;
}

/** Per-call options of {@link Agent.credential}. */
export interface CredentialOptions {
  /** Overrides the agent's `approvalTimeoutMs`. */
  approvalTimeoutMs?: number;
  /** Told when the request is waiting for an approval (e.g. to notify the operators). */
  onPending?: (pending: PendingApproval) => void;
  signal?: AbortSignal;
}

/** The body of a gateway call. Streams are refused: a call may be sent twice (see {@link Agent.fetch}). */
export type GatewayBody = string | Uint8Array | ArrayBuffer | URLSearchParams;

/** Options of a gateway call ({@link Agent.fetch}). */
export interface GatewayRequestInit extends CredentialOptions {
  method?: string;
  headers?: ConstructorParameters<typeof Headers>[0];
  body?: GatewayBody | null;
  /** A JSON body (sets `content-type: application/json`). */
  json?: unknown;
  /** How long each attempt waits for the gateway's answer (status and headers), in ms; default the agent's `timeoutMs`. */
  timeoutMs?: number;
}

/** Options of {@link Agent.mcpFetch}. */
export interface McpFetchOptions {
  /** The `mcp` connector. */
  connector: string;
  /**
   * The credential used for session traffic (`initialize`, `tools/list`, notifications): any
   * tool the task allows, with its constraints. No use of it is spent.
   */
  session: { action: string; constraints?: Record<string, unknown> };
  /** The constraints to ask for a tool call, from its arguments (exactly this call, no wider). */
  constraints?: (tool: string, args: Record<string, unknown>) => Record<string, unknown> | undefined;
  /** How long each request waits for the gateway's answer (status and headers), in ms; default the agent's `timeoutMs`. */
  timeoutMs?: number;
}

const DEFAULT_APPROVAL_TIMEOUT_MS = 5 * 60_000;
const MAX_CACHED = 1000;

/** Canonical JSON (sorted keys) so that equal requests share one cache entry. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, member]) => member !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, member]) => `${JSON.stringify(key)}:${canonical(member)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** A cached credential, or the one exchange under way for it (`pending`, shared by its waiters). */
interface CacheEntry {
  credential: Promise<Credential>;
  refreshAt: number;
  pending?: { controller: AbortController; waiters: number };
}

/** The entry's credential for one caller: its own abort rejects only its wait, and stops the exchange when it was the last one waiting. */
function waitFor(entry: CacheEntry, signal: AbortSignal | undefined): Promise<Credential> {
  const pending = entry.pending;
  if (!pending) return entry.credential;
  pending.waiters += 1;
  if (!signal) return entry.credential; // a caller that cannot abort keeps the exchange going
  return new Promise<Credential>((resolve, reject) => {
    const onAbort = () => {
      pending.waiters -= 1;
      if (pending.waiters === 0) pending.controller.abort(signal.reason);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    entry.credential.then(
      (credential) => {
        signal.removeEventListener('abort', onAbort);
        resolve(credential);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * An agent: exchanges a task token for connector credentials (RFC 8693 with RFC 9396
 * `authorization_details`, a fresh `private_key_jwt` assertion each time), bound to its
 * DPoP key by default; caches each exact request's credential until shortly before it
 * expires; waits for human approvals; and calls connectors through the gateway.
 */
export class Agent {
  readonly #client: WritClient;
  readonly #gatewayUrl: string;
  readonly #approvalTimeoutMs: number;
  readonly #dpop?: Promise<oauth.DPoPHandle>;
  readonly #cache = new Map<string, CacheEntry>();

  constructor(options: AgentOptions) {
    this.#client = new WritClient(options);
    if (!options.gatewayUrl) throw new WritError('invalid_options', 'gatewayUrl is required');
    const gateway = new URL(options.gatewayUrl);
    if (gateway.search || gateway.hash || gateway.username || gateway.password) {
      throw new WritError('invalid_options', 'gatewayUrl must be a plain base URL');
    }
    if (!this.#client.allowInsecure && gateway.protocol !== 'https:') {
      throw new WritError('invalid_options', 'the gateway must be https (set allowInsecureRequests for local development)');
    }
    this.#gatewayUrl = `${gateway.origin}${gateway.pathname.replace(/\/+$/, '')}`;
    this.#approvalTimeoutMs = options.approvalTimeoutMs ?? DEFAULT_APPROVAL_TIMEOUT_MS;
    if (options.dpop !== false) {
      // Proofs carry the server's time (learnt at discovery) when the local clock is off.
      const onServerClock = { [oauth.modifyAssertion]: (_header: unknown, payload: { iat?: number }) => void (payload.iat = this.#client.now()) };
      this.#dpop = oauth.generateKeyPair('ES256').then((keyPair) => oauth.DPoP(this.#client.client, keyPair, onServerClock));
      this.#dpop.catch(() => undefined);
    }
  }

  /** A handle bound to one task token: `credential(request)`, `fetch(request, path, init)`. */
  forTask(taskToken: string): TaskAgent {
    return new TaskAgent(this, taskToken);
  }

  /** The thumbprint (RFC 7638) of the DPoP key credentials are bound to, if any. */
  async dpopThumbprint(): Promise<string | undefined> {
    return this.#dpop ? (await this.#dpop).calculateThumbprint() : undefined;
  }

  /**
   * A credential for exactly `request`, from the cache when an identical request got one
   * that is still comfortably valid; otherwise by token exchange, waiting for a human when
   * the policy asks for one (`authorization_pending`: polls with the server's `interval`
   * and `approval_id`, slower after `slow_down`, until the approval timeout).
   * Refusals throw typed errors: {@link PolicyRefusalError} with the policy's `reasons`,
   * {@link InvalidGrantError} when the task is over, {@link AccessDeniedError} when the
   * approval was denied, {@link ApprovalTimeoutError}.
   */
  credential(taskToken: string, request: ConnectorRequest, options: CredentialOptions = {}): Promise<Credential> {
    const key = `${taskToken}\n${canonical(this.detailOf(request))}`;
    if (options.signal?.aborted) return Promise.reject(options.signal.reason as Error);
    let entry = this.#cache.get(key);
    if (!entry || Date.now() >= entry.refreshAt) {
      // One exchange for every concurrent identical request; it has its own signal, aborted
      // only when every caller waiting for it has aborted (one caller giving up does not fail the others).
      const controller = new AbortController();
      const fresh: CacheEntry = {
        credential: Promise.resolve(undefined as unknown as Credential),
        refreshAt: Number.POSITIVE_INFINITY,
        pending: { controller, waiters: 0 },
      };
      fresh.credential = this.exchange(taskToken, request, { ...options, signal: controller.signal }).then(
        (credential) => {
          fresh.refreshAt = refreshAtFor(Date.now(), credential.expiresAt - Date.now());
          fresh.pending = undefined;
          // Too short-lived to reuse (`expires_in: 0`): the callers that waited for it get it, the next one exchanges.
          if (fresh.refreshAt === Number.NEGATIVE_INFINITY && this.#cache.get(key) === fresh) this.#cache.delete(key);
          return credential;
        },
        (error: unknown) => {
          if (this.#cache.get(key) === fresh) this.#cache.delete(key);
          throw error;
        },
      );
      fresh.credential.catch(() => undefined);
      this.remember(key, fresh);
      entry = fresh;
    }
    return waitFor(entry, options.signal);
  }

  /** Drops cached credentials: of one request, or every one of a task token. */
  forget(taskToken: string, request?: ConnectorRequest): void {
    if (request) {
      this.#cache.delete(`${taskToken}\n${canonical(this.detailOf(request))}`);
      return;
    }
    for (const key of this.#cache.keys()) if (key.startsWith(`${taskToken}\n`)) this.#cache.delete(key);
  }

  /**
   * Calls `path` (relative to the connector, e.g. `/v1/payouts`) through the gateway with a
   * credential for `request` and, when bound, a fresh DPoP proof (`htm`, `htu`, `ath`).
   * Any other target (an absolute URL, `//host`, `..`) is refused before a credential is
   * obtained or sent ({@link GatewayPathError}). The gateway's answer is returned as is,
   * refusals included (403 `insufficient_scope` with the failed rule). When the gateway
   * refuses the credential itself (401 with its `invalid_token` challenge: spent, revoked,
   * expired), nothing was forwarded: the cached credential is dropped and the call is made
   * once more with a new one. Any other 401 is the upstream's answer, returned as it is.
   */
  async fetch(taskToken: string, request: ConnectorRequest, path: string, init: GatewayRequestInit = {}): Promise<Response> {
    const url = gatewayUrlFor(this.#gatewayUrl, request.connector, path);
    const method = (init.method ?? (init.json !== undefined || init.body ? 'POST' : 'GET')).toUpperCase();
    const headers = new Headers(init.headers);
    for (const name of ['authorization', 'dpop']) {
      if (headers.has(name)) throw new WritError('invalid_request', `the ${name} header is set by the SDK`);
    }
    let body: oauth.ProtectedResourceRequestBody | undefined;
    if (init.json !== undefined) {
      if (init.body != null) throw new WritError('invalid_request', 'give either body or json');
      body = JSON.stringify(init.json);
      if (!headers.has('content-type')) headers.set('content-type', 'application/json');
    } else if (init.body != null) {
      if (typeof ReadableStream !== 'undefined' && (init.body as unknown) instanceof ReadableStream) {
        throw new WritError('invalid_request', 'streamed bodies are not supported (a refused credential is retried)');
      }
      body = init.body instanceof ArrayBuffer ? new Uint8Array(init.body) : init.body;
    }
    return this.send(taskToken, request, url, method, headers, body ?? null, init);
  }

  /**
   * A `fetch` for an MCP client transport (Streamable HTTP) talking to an `mcp` connector
   * through the gateway: each `tools/call` goes out with a credential for exactly that tool
   * and the constraints `options.constraints` derives from its arguments; session traffic
   * (`initialize`, `tools/list`, notifications, the event stream, session end) with the
   * credential of `options.session`, which the gateway spends no use of. Pass it as the
   * transport's `fetch`, with the URL from {@link Agent.mcpUrl}.
   */
  mcpFetch(taskToken: string, options: McpFetchOptions): typeof fetch {
    const endpoint = new URL(this.mcpUrl(options.connector));
    const timeoutMs = options.timeoutMs === undefined ? undefined : checkTimeout(options.timeoutMs, 'timeoutMs');
    return async (input, init = {}) => {
      const source = input instanceof Request ? input : undefined;
      // The transport's URL is honoured (its query too), but only on the connector's MCP endpoint: checked before any credential exists.
      const url = this.mcpTarget(endpoint, input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      const method = (init.method ?? source?.method ?? 'GET').toUpperCase();
      const headers = new Headers(init.headers ?? source?.headers);
      headers.delete('authorization');
      headers.delete('dpop');
      let body = init.body ?? null;
      if (body === null && source?.body) body = await source.text();
      if (body != null && typeof body !== 'string') throw new WritError('invalid_request', 'MCP messages are sent as JSON text');
      const request = this.mcpRequestOf(options, body);
      const signal = init.signal ?? source?.signal ?? undefined;
      return this.send(taskToken, request, url, method, headers, body, { signal, timeoutMs });
    };
  }

  /**
   * The URL an MCP transport asked for, when it is the connector's MCP endpoint ({@link mcpUrl},
   * any query kept) on the gateway's origin (same scheme, host and port); anything else is a
   * {@link GatewayPathError} naming it, and nothing is sent. The URL parser has already
   * resolved `.` and `..`; an encoded one does not match.
   */
  private mcpTarget(endpoint: URL, raw: string): URL {
    let target: URL;
    try {
      target = new URL(raw);
    } catch {
      throw new GatewayPathError(`mcpFetch got an invalid URL ${JSON.stringify(raw.slice(0, 200))}`);
    }
    const shown = `${target.protocol}//${target.host}${target.pathname}`;
    if (target.origin !== endpoint.origin) {
      throw new GatewayPathError(`mcpFetch sends credentials to the gateway (${endpoint.origin}) only, not to ${shown}`);
    }
    if (target.username || target.password) throw new GatewayPathError(`mcpFetch refuses a URL with credentials in it (${shown})`);
    if (target.pathname !== endpoint.pathname) {
      throw new GatewayPathError(`mcpFetch sends credentials to the MCP endpoint ${endpoint.href} only, not to ${shown}`);
    }
    return new URL(`${endpoint.href}${target.search}`);
  }

  /** The gateway URL of an `mcp` connector (the MCP endpoint the client connects to). */
  mcpUrl(connector: string): string {
    return gatewayUrlFor(this.#gatewayUrl, connector, '/').href.replace(/\/$/, '');
  }

  /** The credential request for one MCP message: its tool for `tools/call`, the session's for anything else. */
  private mcpRequestOf(options: McpFetchOptions, body: string | null): ConnectorRequest {
    let message: { method?: unknown; params?: { name?: unknown; arguments?: unknown } } | undefined;
    try {
      message = body ? (JSON.parse(body) as typeof message) : undefined;
    } catch {
      message = undefined;
    }
    if (message && message.method === 'tools/call' && typeof message.params?.name === 'string') {
      const tool = message.params.name;
      const args = (message.params.arguments ?? {}) as Record<string, unknown>;
      return { connector: options.connector, action: tool, constraints: options.constraints?.(tool, args) };
    }
    return { connector: options.connector, ...options.session };
  }

  private async send(
    taskToken: string,
    request: ConnectorRequest,
    url: URL,
    method: string,
    headers: Headers,
    body: oauth.ProtectedResourceRequestBody | null,
    init: CredentialOptions & { timeoutMs?: number },
  ): Promise<Response> {
    const timeoutMs = checkTimeout(init.timeoutMs ?? this.#client.timeoutMs, 'timeoutMs');
    let refreshed = false;
    let nonceSent = false;
    let retries = 0;
    // One credential for every attempt of this call (a nonce, a 429/503 retry): only the gateway's refusal of it
    // gets a new one, once. A credential too short-lived to cache (`expires_in: 0`) is then still one exchange per call.
    let credential = await this.credential(taskToken, request, init);
    for (;;) {
      const dpop = credential.tokenType === 'DPoP' ? await this.#dpop : undefined;
      let response: Response;
      let nonceAsked = false;
      // The gateway's own refusal of the credential (spent, revoked, expired): nothing was forwarded. An upstream's
      // 401 comes through without a challenge (the gateway drops its WWW-Authenticate): that request reached it.
      let credentialRefused = false;
      // Until the answer's headers arrive: a hung gateway or upstream fails the call instead of hanging the agent.
      const deadline = new AbortController();
      const timer = setTimeout(
        () => deadline.abort(new WritTimeoutError(`no answer from the gateway to ${method} ${url.origin}${url.pathname} within ${timeoutMs} ms`, timeoutMs)),
        timeoutMs,
      );
      const signal = init.signal ? anySignal([init.signal, deadline.signal]) : deadline.signal;
      try {
        response = await oauth.protectedResourceRequest(
          credential.accessToken,
          method,
          url,
          new Headers(headers),
          body,
          this.#client.options({ DPoP: dpop, signal }, false),
        );
      } catch (error) {
        if (deadline.signal.aborted && !init.signal?.aborted) throw deadline.signal.reason;
        // A `WWW-Authenticate` challenge is an answer like any other for the caller.
        if (!(error instanceof oauth.WWWAuthenticateChallengeError)) throw error;
        response = error.response;
        nonceAsked = dpop !== undefined && oauth.isDPoPNonceError(error);
        credentialRefused = error.status === 401 && error.cause.some((challenge) => challenge.parameters.error === 'invalid_token');
      } finally {
        clearTimeout(timer);
      }
      if (nonceAsked && !nonceSent) {
        // RFC 9449 §9: the gateway wants a nonce (kept by oauth4webapi from `DPoP-Nonce`); the credential is fine.
        nonceSent = true;
        await response.body?.cancel();
        continue;
      }
      if (credentialRefused && !refreshed) {
        refreshed = true;
        await response.body?.cancel();
        // Its own replacement, never one another refused call is waiting for: a write credential is one-use by
        // default, and concurrent identical writes that shared one (spent by the first) must each get their own.
        this.forget(taskToken, request);
        credential = await this.credential(taskToken, request, init);
        continue;
      }
      // Shed (429) or unavailable (503): only an idempotent call is sent again, a POST may have been forwarded.
      const delay = IDEMPOTENT_METHODS.has(method) ? retryDelayMs(response, retries) : undefined;
      if (delay === undefined) return response;
      retries++;
      await response.body?.cancel();
      await sleep(delay, init.signal);
    }
  }

  private detailOf(request: ConnectorRequest): AuthorizationDetail {
    if (!request || typeof request.connector !== 'string' || typeof request.action !== 'string') {
      throw new WritError('invalid_request', 'a request names one connector and one action');
    }
    return {
      type: 'connector',
      connector: request.connector,
      actions: [request.action],
      ...(request.constraints !== undefined ? { constraints: request.constraints } : {}),
    };
  }

  private remember(key: string, entry: CacheEntry): void {
    const now = Date.now();
    if (this.#cache.size >= MAX_CACHED) {
      for (const [candidate, cached] of this.#cache) if (cached.refreshAt <= now) this.#cache.delete(candidate);
      while (this.#cache.size >= MAX_CACHED) this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(key, entry);
  }

  /** Token exchange, repeated while a human approval is pending. */
  private async exchange(taskToken: string, request: ConnectorRequest, options: CredentialOptions): Promise<Credential> {
    const detail = this.detailOf(request);
    const dpop = await this.#dpop;
    const deadline = Date.now() + (options.approvalTimeoutMs ?? this.#approvalTimeoutMs);
    const parameters: Record<string, string> = {
      subject_token: taskToken,
      subject_token_type: TOKEN_TYPE_JWT,
      authorization_details: JSON.stringify([detail]),
      resource: `${this.#gatewayUrl}/connectors/${request.connector}`,
    };
    let serverInterval = 5; // RFC 8628 §3.5's default when the server names none
    let slowDown = 0;
    let approvalId: string | undefined;
    let reasons: string[] = [];
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        const response = await this.#client.token(GRANT_TYPE_TOKEN_EXCHANGE, parameters, dpop, options.signal);
        const bound = response.token_type.toLowerCase() === 'dpop';
        if (dpop && !bound) throw new WritError('unexpected_response', 'asked for a DPoP-bound credential, got a bearer one');
        return hideSecrets<Credential>(
          {
            accessToken: response.access_token,
            tokenType: bound ? 'DPoP' : 'Bearer',
            expiresAt: Date.now() + lifetimeMs(response.expires_in),
            authorizationDetails: (response.authorization_details as AuthorizationDetail[] | undefined) ?? [detail],
          },
          ['accessToken'],
        );
      } catch (error) {
        if (!(error instanceof WritOAuthError)) throw error;
        if (error.error === 'authorization_pending') {
          approvalId = typeof error.body.approval_id === 'string' ? error.body.approval_id : approvalId;
          if (!approvalId) throw error;
          parameters.approval_id = approvalId;
          if (typeof error.body.interval === 'number' && error.body.interval > 0) serverInterval = error.body.interval;
          if (error.reasons.length > 0 && /^a human must approve/.test(error.description ?? '')) reasons = error.reasons;
          options.onPending?.({ approvalId, reasons, interval: serverInterval + slowDown });
        } else if (error.error === 'slow_down') {
          slowDown += 5; // RFC 8628 §3.5: 5 s more for this and every later poll
        } else {
          throw error;
        }
        const interval = serverInterval + slowDown;
        if (Date.now() + interval * 1000 > deadline) throw new ApprovalTimeoutError(approvalId ?? '', reasons);
        await sleep(interval * 1000, options.signal);
      }
    }
  }
}

/** An {@link Agent} bound to one task token. */
export class TaskAgent {
  constructor(
    readonly agent: Agent,
    readonly taskToken: string,
  ) {}

  /** The task token is a credential: `[redacted]` in JSON and `console.log`. */
  toJSON(): Record<string, unknown> {
    return redactedView(this, ['taskToken']);
  }

  [INSPECT](): Record<string, unknown> {
    return this.toJSON();
  }

  /** See {@link Agent.credential}. */
  credential(request: ConnectorRequest, options?: CredentialOptions): Promise<Credential> {
    return this.agent.credential(this.taskToken, request, options);
  }

  /** See {@link Agent.fetch}. */
  fetch(request: ConnectorRequest, path: string, init?: GatewayRequestInit): Promise<Response> {
    return this.agent.fetch(this.taskToken, request, path, init);
  }

  /** See {@link Agent.mcpFetch}. */
  mcpFetch(options: McpFetchOptions): typeof fetch {
    return this.agent.mcpFetch(this.taskToken, options);
  }
}
