import { BadRequestException, Body, Controller, Delete, Get, HttpCode, Param, Post, Query, Req, Res, UseGuards, UseInterceptors } from '@nestjs/common';
import type { Request, Response } from 'express';
import {
  CONNECT_COOKIE,
  ConnectedAccounts,
  connectionCursorOf,
  type ConnectionView,
  type ConnectLink,
  isConnectionCursor,
  UserTokenVerifier,
} from '@writ/accounts';
import { WRIT_CONFIG, type WritConfig } from '@writ/config';
import { decodeCursor, DEFAULT_PAGE_SIZE, encodeCursor, FailureThrottle, NoStore, sourceAddress, UnreadQueryInterceptor } from '@writ/platform';
import { Inject } from '@nestjs/common';
import { ORCHESTRATOR, OrchestratorBearerGuard, type OrchestratorPrincipal } from '../tasks/orchestrator-bearer.guard';
import { UserSubjects } from '../tasks/user-subjects.service';
import { TooManyRequestsError } from '@writ/oauth';
import { connectionFailure, ConnectionRefusedError } from './connection-errors';
import { CreateConnectLinkDto } from './create-connect-link.dto';
import { ListMyConnectionsQueryDto } from './list-my-connections.dto';

/** `Retry-After` on the callback's page when the provider could not be reached (a person reads it, not a client). */
const PROVIDER_RETRY_AFTER_SECONDS = 30;

const PAGE = (title: string, text: string, form = '') =>
  `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1><p>${text}</p>${form}</body></html>`;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The callback's URL on the issuer: only an origin-form target (`/connect/callback?...`) is read.
 * An absolute-form target (`GET http://host:99999/connect/callback`), which Express still routes
 * here by its path, or a protocol-relative one (`//host/...`) is a 400, never a 500 from `new URL`.
 */
export function callbackUrlOf(target: string, issuer: string): URL {
  if (!target.startsWith('/') || target.startsWith('//')) {
    throw new BadRequestException('the request target must be a path (origin-form), e.g. /connect/callback?state=...');
  }
  try {
    return new URL(target, issuer);
  } catch {
    throw new BadRequestException('the request target is not a valid path');
  }
}

/** Connect links for orchestrators (Tasks API token): `POST /v1/connections/links`; a query member is a `400` naming it. */
@Controller('v1/connections')
@UseGuards(OrchestratorBearerGuard)
@UseInterceptors(UnreadQueryInterceptor)
export class ConnectLinksController {
  constructor(
    private readonly accounts: ConnectedAccounts,
    private readonly subjects: UserSubjects,
  ) {}

  /** Issues a one-time connect link for a verified user (`user_token`, or `user` when trusted to assert). */
  @Post('links')
  @NoStore()
  async create(@Req() request: Request & { [ORCHESTRATOR]: OrchestratorPrincipal }, @Body() body: CreateConnectLinkDto): Promise<ConnectLink> {
    const orchestrator = request[ORCHESTRATOR];
    const user = await this.subjects.verify(orchestrator.id, body, true);
    try {
      return await this.accounts.createLink(body.connector_id, user!, { type: 'orchestrator', id: orchestrator.id });
    } catch (error) {
      throw connectionFailure(error);
    }
  }
}

/**
 * The user's side, in a browser: `GET /connect/{link}` redirects to the provider (PKCE S256,
 * `state`) and binds the attempt to this browser with a cookie; `GET /connect/callback`
 * redeems the code and shows a minimal page.
 */
@Controller('connect')
export class ConnectFlowController {
  constructor(
    private readonly accounts: ConnectedAccounts,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    private readonly throttle: FailureThrottle,
  ) {}

  /**
   * Counts a refused link or `state` per source address (shared with the OAuth endpoints):
   * audited one by one up to the window's cap, then `429` with `Retry-After`.
   */
  private counter(request: Request): { audit: () => Promise<boolean>; limited: () => number | undefined } {
    let retryAfter: number | undefined;
    return {
      audit: async () => {
        const verdict = await this.throttle.failure('oauth', sourceAddress(request));
        if (verdict.limited) retryAfter = verdict.retryAfterSeconds;
        return verdict.audit;
      },
      limited: () => retryAfter,
    };
  }

  private async blocked(request: Request, response: Response): Promise<boolean> {
    const verdict = await this.throttle.refuseIfBlocked('oauth', sourceAddress(request));
    if (!verdict) return false;
    response.setHeader('retry-after', String(verdict.retryAfterSeconds));
    response.status(429).type('html').send(PAGE('Not connected', 'Too many failed attempts from this address: try again later.'));
    return true;
  }

  /** The provider's redirect back to Writ. */
  @Get('callback')
  @NoStore()
  async callback(@Req() request: Request, @Res() response: Response): Promise<void> {
    // The page's URL holds the code: it goes nowhere in a Referer (RFC 9700 section 4.2.4), and
    // the page is never framed; whatever it says, a refusal or too many attempts included.
    pageHeaders(response);
    if (await this.blocked(request, response)) return;
    const counter = this.counter(request);
    const url = callbackUrlOf(request.originalUrl, this.config.issuer);
    const flow = flowCookie(this.config.issuer);
    const browser = cookie(request, flow.name);
    response.setHeader('set-cookie', `${flow.name}=; ${flow.attributes(0)}`);
    try {
      const { connectorId } = await this.accounts.completeCallback(url, browser, counter.audit);
      response
        .status(200)
        .type('html')
        .send(PAGE('Connected', `Your account is connected to ${escapeHtml(connectorId)}. You can close this window.`));
    } catch (error) {
      const failure = connectionFailure(error);
      if (!(failure instanceof ConnectionRefusedError)) throw failure;
      this.refuse(response, failure, counter.limited());
    }
  }

  /**
   * Shows what a connect link is for and asks before anything starts: opening the link is a
   * `POST` from this page. A `GET` changes nothing, so a link opened by someone else's page (a
   * cross-site navigation, login CSRF: the attacker's own link run in the victim's browser,
   * which the provider may answer at once for a user signed in there) connects nothing, and a
   * link preview does not spend the link.
   */
  @Get(':link')
  @NoStore()
  async confirm(@Req() request: Request, @Param('link') link: string, @Res() response: Response): Promise<void> {
    pageHeaders(response);
    if (await this.blocked(request, response)) return;
    const counter = this.counter(request);
    try {
      const { connectorId, user } = await this.accounts.describeLink(link, counter.audit);
      const connector = escapeHtml(connectorId);
      response
        .status(200)
        .type('html')
        .send(
          PAGE(
            `Connect your ${connector} account`,
            `Writ will connect the account you sign in with at ${connector} for the user <b>${escapeHtml(user.sub)}</b> of ${escapeHtml(user.iss)}. ` +
              'Agents acting for that user will use it. Continue only if you asked for this link for yourself.',
            `<form method="post"><button type="submit">Continue to ${connector}</button></form>`,
          ),
        );
    } catch (error) {
      const failure = connectionFailure(error);
      if (!(failure instanceof ConnectionRefusedError)) throw failure;
      this.refuse(response, failure, counter.limited());
    }
  }

  /**
   * Opens a connect link (once) and redirects to the provider: only from the link's own page
   * (the browser's `Origin` is the issuer's; without one, `Sec-Fetch-Site: same-origin`). A
   * cross-site form is refused and the link stays unopened.
   */
  @Post(':link')
  @NoStore()
  async open(@Req() request: Request, @Param('link') link: string, @Res() response: Response): Promise<void> {
    pageHeaders(response);
    if (await this.blocked(request, response)) return;
    const counter = this.counter(request);
    if (!fromIssuerPage(request, this.config.issuer)) {
      response
        .status(403)
        .type('html')
        .send(PAGE('Not connected', 'This connect link was not opened from its own page: open the link itself, and continue there.'));
      return;
    }
    try {
      const { redirect, browser } = await this.accounts.openLink(link, counter.audit);
      const flow = flowCookie(this.config.issuer);
      response.setHeader('set-cookie', `${flow.name}=${browser}; ${flow.attributes(600)}`);
      response.redirect(303, redirect);
    } catch (error) {
      const failure = connectionFailure(error);
      if (!(failure instanceof ConnectionRefusedError)) throw failure;
      this.refuse(response, failure, counter.limited());
    }
  }

  private refuse(response: Response, failure: ConnectionRefusedError, retryAfter: number | undefined): void {
    if (retryAfter !== undefined) {
      response.setHeader('retry-after', String(retryAfter));
      response.status(429).type('html').send(PAGE('Not connected', 'Too many failed attempts from this address: try again later.'));
      return;
    }
    // The provider (or the database) is unavailable: the user is told to come back, not that they erred.
    if (failure.status === 503) response.setHeader('retry-after', String(PROVIDER_RETRY_AFTER_SECONDS));
    response
      .status(failure.status)
      .type('html')
      .send(PAGE('Not connected', escapeHtml(failure.description)));
  }
}

/**
 * The user's own connections, authenticated with their identity provider's token (Bearer). A
 * query member a route does not read (`?cursr=`, `?__proto__=`) is a `400` naming it.
 */
@Controller('v1/me/connections')
@UseInterceptors(UnreadQueryInterceptor)
export class MyConnectionsController {
  constructor(
    private readonly accounts: ConnectedAccounts,
    private readonly verifier: UserTokenVerifier,
    private readonly throttle: FailureThrottle,
  ) {}

  /**
   * Lists the caller's connections, newest first, in cursor pages (`?limit=&cursor=`, as the admin
   * API's lists). The user comes from the token on every page, never from the cursor.
   */
  @Get()
  @NoStore()
  async list(@Req() request: Request, @Query() query: ListMyConnectionsQueryDto): Promise<{ items: ConnectionView[]; next_cursor: string | null }> {
    const user = await this.user(request);
    const after = decodeCursor(query.cursor, isConnectionCursor);
    const page = await this.accounts.list(
      { user },
      { limit: query.limit ?? DEFAULT_PAGE_SIZE, after: after ? { connectedAt: after.c, id: after.i } : undefined },
    );
    return { items: page.items, next_cursor: page.next ? encodeCursor(connectionCursorOf(page.next)) : null };
  }

  /** Disconnects one of the caller's connections and revokes it at the upstream. */
  @Delete(':id')
  @HttpCode(200)
  @NoStore()
  async disconnect(@Req() request: Request, @Param('id') id: string): Promise<ConnectionView & { upstream_revocation: string }> {
    const user = await this.user(request);
    try {
      return await this.accounts.disconnect(id, { type: 'anonymous', id: `user:${user.subject}` }, user);
    } catch (error) {
      throw connectionFailure(error);
    }
  }

  private async user(request: Request) {
    const source = sourceAddress(request);
    const blocked = await this.throttle.refuseIfBlocked('oauth', source);
    if (blocked) throw new TooManyRequestsError(blocked.retryAfterSeconds, 'too many failed requests from this address', { reason: 'throttled' });
    try {
      return await this.verifiedUser(request);
    } catch (error) {
      // Only the caller's own failures count toward the throttle: an identity provider's
      // outage (503) must not push its real users to 429.
      if (!(error instanceof ConnectionRefusedError) || error.status >= 500) throw error;
      const verdict = await this.throttle.failure('oauth', source);
      if (verdict.limited) throw new TooManyRequestsError(verdict.retryAfterSeconds, 'too many failed requests from this address', { reason: 'throttled' });
      throw error;
    }
  }

  private async verifiedUser(request: Request) {
    // RFC 7235 section 2.1: the scheme is case-insensitive.
    const match = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(request.headers.authorization ?? '');
    if (!match) throw new ConnectionRefusedError('invalid_token', 401, 'a Bearer token of your identity provider is required', true);
    try {
      return await this.verifier.verify(match[1]);
    } catch (error) {
      throw connectionFailure(error);
    }
  }
}

/**
 * Headers of the connect link's and the callback's pages: nothing loads, nothing frames them (a hidden frame would
 * let another site have the button pressed), and no `Referer` leaves for the provider. Not
 * `no-referrer`: with it a browser sends `Origin: null` on the page's own form.
 */
function pageHeaders(response: Response): void {
  response.setHeader('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
  response.setHeader('x-frame-options', 'DENY');
  response.setHeader('referrer-policy', 'same-origin');
}

/**
 * The cookie binding a connect attempt to its browser. On an https issuer a `__Host-` cookie
 * (`Secure`, `Path=/`, no `Domain`): neither a sibling subdomain nor a plain-http answer on the
 * host can set it in a victim's browser (cookie tossing), which would let an attacker's own
 * attempt, opened in the attacker's browser, be completed in the victim's with the victim's
 * upstream account (login CSRF, RFC 9700 section 4.7). An http issuer (development) keeps a
 * plain cookie on `/connect`.
 */
function flowCookie(issuer: string): { name: string; attributes: (maxAge: number) => string } {
  if (issuer.startsWith('https:')) {
    return { name: `__Host-${CONNECT_COOKIE}`, attributes: (maxAge) => `Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}; Secure` };
  }
  return { name: CONNECT_COOKIE, attributes: (maxAge) => `Path=/connect; HttpOnly; SameSite=Lax; Max-Age=${maxAge}` };
}

/** A request sent by a page of the issuer's own origin (a browser says so by `Origin`, else `Sec-Fetch-Site`). */
function fromIssuerPage(request: Request, issuer: string): boolean {
  const origin = request.headers.origin;
  if (origin !== undefined) return origin === new URL(issuer).origin;
  return request.headers['sec-fetch-site'] === 'same-origin';
}

function cookie(request: Request, name: string): string | undefined {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=');
    if (key === name) return value.join('=');
  }
  return undefined;
}
