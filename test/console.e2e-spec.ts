import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser, Page, Request } from 'playwright-core';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { describeWithBrowser, launchChromium } from './support/browser';
import { createTask, exchangeFields, PAYOUT_ALLOWED, payoutUpTo, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { dpopKey, proof } from './support/dpop';
import { http, postForm, sendJson, tokenRequest } from './support/oauth-client';
import { seedConnector, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { clientAuthFields, insertIdentityProviderRow } from '@writ/testing';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { buildConsole } = require('../scripts/build-console.js') as { buildConsole: () => void };

const PAYMENTS_SECRET = 'sk_live_console_9c1e77ab42';
const CHAT_SECRET = 'xoxb-example-not-a-real-token-5521';
/** `npm run console:screenshots` sets this to docs/console: each page is captured as a PNG. */
const SCREENSHOTS = process.env.WRIT_CONSOLE_SCREENSHOTS;

describeWithBrowser('admin console in Chromium', () => {
  jest.setTimeout(120_000);
  let services: TestServices;
  let world: World;
  let payments: MockUpstream;
  let browser: Browser;
  let page: Page;
  let viewerToken: string;
  const cspViolations: string[] = [];

  beforeAll(async () => {
    buildConsole();
    payments = await startPaymentsUpstream(PAYMENTS_SECRET);
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool, payments.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
    // Policy data: payouts above 100.00 USD need a human.
    await requireApprovalAbove(services, 10000);
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, acceptDownloads: true });
    page = await context.newPage();
    // Every CSP violation the page sees is kept (an init script runs outside the page's CSP).
    await page.addInitScript({
      content:
        "document.addEventListener('securitypolicyviolation', (e) => { (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });",
    });
    page.on('console', (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) cspViolations.push(message.text());
    });
  });

  afterAll(async () => {
    await browser?.close();
    await services?.close();
    await payments?.close();
  });

  const exchange = (taskToken: string, details: unknown, extra: Record<string, string> = {}) =>
    tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, details, extra));
  /** A task allowed to pay `destination` for `purpose`, and the approval its agent's 420.00 USD payout there asks for. */
  const approvalPaying = async (destination: string, purpose: string) => {
    const allowed = [{ ...PAYOUT_ALLOWED[0], constraints: { ...PAYOUT_ALLOWED[0].constraints, destination } }];
    const task = await createTask(services, world.orchestrator, { purpose, allowed });
    const details = [{ ...payoutUpTo(42000)[0], constraints: { ...payoutUpTo(42000)[0].constraints, destination } }];
    const approvalId: string = (await exchange(task.task_token, details)).body.approval_id;
    return { task, approvalId };
  };
  const callGateway = (token: string) =>
    http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount: 4200, currency: 'usd' }),
    });
  const shot = async (name: string) => {
    if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
  };
  const signIn = async (token: string) => {
    await page.goto(`${services.adminUrl}/console/`);
    await page.fill('input[name=token]', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=who]');
  };

  // Shared by the steps below, which tell one story in order.
  let approvedTask: { task_id: string; task_token: string };
  let liveCredential: string;

  it('serves the console with strict security headers and no cookie', async () => {
    const response = await http(`${services.adminUrl}/console/`);
    expect(response.status).toBe(200);
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('x-frame-options')).toBe('DENY');
    expect(response.headers.get('set-cookie')).toBeNull();
    // No inline script or style anywhere in the page.
    expect(response.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(response.text).not.toMatch(/<style|style=/);
    expect((await http(`${services.adminUrl}/console/../v1/agents`)).status).not.toBe(200);
  });

  it('refuses a wrong token, then signs in and shows a task appearing live', async () => {
    await page.goto(`${services.adminUrl}/console/`);
    await shot('sign-in');
    await page.fill('input[name=token]', 'writ_admin_not-a-real-token');
    await page.click('button[type=submit]');
    await page.waitForSelector('text=unknown or revoked');
    await signIn(services.adminToken);
    expect(await page.textContent('[data-testid=who]')).toContain('admin');
    await page.waitForSelector('text=No active task.');
    // The task is declared after the page is open: it must appear without a reload.
    approvedTask = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-42 to Acme' });
    const row = page.locator(`tr[data-task-id="${approvedTask.task_id}"]`);
    await row.waitFor();
    expect(await row.textContent()).toContain('pay invoice INV-42 to Acme');
    expect(await row.textContent()).toContain('agent-1');
    await page.waitForSelector('[data-testid=event-feed] li[data-type="task.created"]');
    // The token never lands in web storage or a cookie.
    const stored = await page.evaluate<string>('JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, cookie: document.cookie })');
    expect(stored).not.toContain(services.adminToken);
  });

  it('renders what agents and orchestrators send as text, never as markup', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
    const task = await createTask(services, world.orchestrator, { purpose: hostile, metadata: { note: hostile } });
    const row = page.locator(`tr[data-task-id="${task.task_id}"]`);
    await row.waitFor();
    expect(await row.locator('.purpose').textContent()).toBe(hostile);
    expect(await row.locator('img').count()).toBe(0);
    expect(await page.evaluate<unknown>('window.__pwned')).toBeUndefined();
    // Even markup that got into the DOM could not run: the CSP refuses inline script.
    await page.evaluate(`document.body.appendChild(Object.assign(document.createElement('script'), { textContent: 'window.__injected = 1' }))`);
    expect(await page.evaluate<unknown>('window.__injected')).toBeUndefined();
    expect(await page.evaluate<string[]>('window.__csp.splice(0)')).toEqual([expect.stringMatching(/^script-src-elem inline/)]);
    for (let i = 0; i < 100 && cspViolations.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(cspViolations.splice(0)).toEqual([expect.stringContaining('Executing inline script violates')]);
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, { reason: hostile }, services.adminToken);
    await row.waitFor({ state: 'detached' });
  });

  it("approves a pending request in the inbox, and the agent's exchange then succeeds", async () => {
    const pending = await exchange(approvedTask.task_token, payoutUpTo(42000));
    expect(pending.body.error).toBe('authorization_pending');
    const approvalId: string = pending.body.approval_id;
    await page.waitForSelector('[data-testid=approvals-badge]');
    expect(await page.textContent('[data-testid=approvals-badge]')).toBe('1');
    await page.click('nav a[href="#/approvals"]');
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.waitFor();
    await card.locator('[data-testid=purpose]:has-text("INV-42")').waitFor();
    const text = await card.textContent();
    expect(text).toContain('"amount_max": 42000');
    expect(text).toContain('above the approval threshold');
    await shot('approvals');
    await card.locator('input[name=note]').fill('invoice INV-42 checked');
    await card.locator('button:has-text("Approve")').click();
    // The card stays where it was, its buttons replaced by the decision.
    await card.locator('text=Approved by you.').waitFor();
    expect(await card.locator('button').count()).toBe(0);
    const granted = await exchange(approvedTask.task_token, payoutUpTo(42000), { approval_id: approvalId });
    expect(granted.status).toBe(200);
    liveCredential = granted.body.access_token;
    expect((await callGateway(liveCredential)).status).toBe(201);
    const approval = await sendJson('GET', `${services.adminUrl}/v1/approvals/${approvalId}`, undefined, services.adminToken);
    expect(approval.body).toMatchObject({ status: 'used', note: 'invoice INV-42 checked' });
  });

  it('denies another request, and the agent is refused', async () => {
    const task = await createTask(services, world.orchestrator, { purpose: 'refund duplicate payment' });
    const pending = await exchange(task.task_token, payoutUpTo(30000));
    const approvalId: string = pending.body.approval_id;
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    // A new request joins the cards shown only when asked for.
    await page.locator('[data-testid=update-approvals]:has-text("1 new")').click();
    await card.waitFor();
    expect(await page.locator('article.approval').count()).toBe(1);
    await card.locator('input[name=note]').fill('not ours');
    await card.locator('button:has-text("Deny")').click();
    await card.locator('text=Denied by you.').waitFor();
    await page.waitForSelector(`tr[data-approval-id="${approvalId}"] >> text=denied`);
    const refused = await exchange(task.task_token, payoutUpTo(30000), { approval_id: approvalId });
    expect(refused.body).toEqual({ error: 'access_denied', error_description: 'the approval was denied' });
  });

  const approvalStatus = async (id: string) => (await sendJson('GET', `${services.adminUrl}/v1/approvals/${id}`, undefined, services.adminToken)).body.status;
  const openInbox = async () => {
    await page.click('nav a[href="#/tasks"]');
    await page.click('nav a[href="#/approvals"]');
  };

  it('never slides a request that an agent times to arrive under the pointer aimed at another', async () => {
    // Purposes of one length: both cards have the same height.
    const read = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-51 to Acme' });
    const timed = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-66 to Mallory' });
    const readId: string = (await exchange(read.task_token, payoutUpTo(31000))).body.approval_id;
    await openInbox();
    const card = page.locator(`article[data-approval-id="${readId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-51")').waitFor();
    const button = (await card.locator('button:has-text("Approve")').boundingBox())!;
    // While the operator reads the first request, the hijacked agent sends another.
    const timedId: string = (await exchange(timed.task_token, payoutUpTo(31000))).body.approval_id;
    await page.locator('h1:has-text("2 pending")').waitFor();
    await page.mouse.click(button.x + button.width / 2, button.y + button.height / 2);
    await page.locator('[data-testid=approvals-badge]:has-text("1")').waitFor();
    expect(await approvalStatus(readId)).toBe('approved');
    expect(await approvalStatus(timedId)).toBe('pending');
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${timedId}/deny`, {}, services.adminToken);
  });

  it('keeps the cards still while the inbox cannot be read, and when it can again', async () => {
    const task = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-57 to Acme' });
    const approvalId: string = (await exchange(task.task_token, payoutUpTo(33000))).body.approval_id;
    await openInbox();
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-57")').waitFor();
    const before = await card.locator('button:has-text("Approve")').boundingBox();
    // The inbox's own poll fails for a while (an outage), as an overloaded service answers.
    const inbox = (url: URL) => url.pathname === '/v1/approvals' && url.searchParams.get('status') === 'pending' && url.searchParams.get('limit') === '100';
    await page.route(inbox, (route) =>
      route.fulfill({
        status: 503,
        contentType: 'application/json',
        headers: { 'retry-after': '1' },
        body: '{"error":"temporarily_unavailable","message":"try later"}',
      }),
    );
    await page.locator('p.error:has-text("try later")').waitFor();
    expect(await card.locator('button:has-text("Approve")').boundingBox()).toEqual(before);
    await page.unroute(inbox);
    await page.locator('p.error:has-text("try later")').waitFor({ state: 'detached' });
    expect(await card.locator('button:has-text("Approve")').boundingBox()).toEqual(before);
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/deny`, {}, services.adminToken);
  });

  it('keeps a decided card in place, so that a quick second click decides nothing else', async () => {
    const below = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-53 to Acme' });
    const clicked = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-54 to Acme' });
    const belowId: string = (await exchange(below.task_token, payoutUpTo(32000))).body.approval_id;
    const clickedId: string = (await exchange(clicked.task_token, payoutUpTo(32000))).body.approval_id;
    await openInbox();
    const card = page.locator(`article[data-approval-id="${clickedId}"]`);
    await page.locator(`article[data-approval-id="${belowId}"] [data-testid=purpose]:has-text("INV-53")`).waitFor();
    await card.locator('[data-testid=purpose]:has-text("INV-54")').waitFor();
    await page.locator('[data-testid=approvals-badge]:has-text("2")').waitFor();
    await card.locator('button:has-text("Approve")').scrollIntoViewIfNeeded();
    const button = (await card.locator('button:has-text("Approve")').boundingBox())!;
    const at = [button.x + button.width / 2, button.y + button.height / 2] as const;
    const decisions: Request[] = [];
    const onRequest = (request: Request) => {
      if (request.method() === 'POST' && request.url().includes('/v1/approvals/')) decisions.push(request);
    };
    page.on('request', onRequest);
    await page.mouse.click(...at);
    await page.locator('[data-testid=approvals-badge]:has-text("1")').waitFor();
    // The second click of a slow double click, once the first has been answered.
    await page.mouse.click(...at);
    await page.evaluate('0');
    page.off('request', onRequest);
    await Promise.all(decisions.map((request) => request.response()));
    expect(decisions.map((request) => request.url())).toEqual([`${services.adminUrl}/v1/approvals/${clickedId}/approve`]);
    expect(await approvalStatus(clickedId)).toBe('approved');
    expect(await approvalStatus(belowId)).toBe('pending');
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${belowId}/deny`, {}, services.adminToken);
  });

  it('shows the exact details with the characters that would disguise them made visible', async () => {
    // U+202E (right-to-left override) shows "acct_\u202E9876" as another account; a Unicode tag is invisible.
    const disguised = 'acct_\u202E9876\u{E0041}';
    const { task, approvalId } = await approvalPaying(disguised, 'pay invoice INV-\u202E77-VNI to Acme');
    await openInbox();
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-")').waitFor();
    const text = (await card.textContent())!;
    expect(text).toContain('"destination": "acct_\\u202e9876\\udb40\\udc41"');
    expect(await card.locator('[data-testid=purpose]').textContent()).toBe('pay invoice INV-⟨U+202E⟩77-VNI to Acme');
    expect(text).not.toMatch(/[\u202E]|\u{E0041}/u);
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/deny`, {}, services.adminToken);
    await page.click('nav a[href="#/tasks"]');
    const row = page.locator(`tr[data-task-id="${task.task_id}"]`);
    expect(await row.locator('.purpose').textContent()).toBe('pay invoice INV-⟨U+202E⟩77-VNI to Acme');
    expect(await row.locator('.details').textContent()).toContain('destination="acct_\\u202e9876\\udb40\\udc41"');
  });

  it('shows every character the browser draws as nothing, not only bidi controls and tags', async () => {
    // Each is drawn with no width by Chromium: a combining grapheme joiner, variation selectors
    // (also from the supplement), a Mongolian selector, an unassigned default-ignorable, a Khmer
    // inherent vowel. `acct_1` with any of them reads as `acct_1` to the person approving.
    const invisible = ['\u034F', '\uFE0F', '\u{E0100}', '\u180B', '\u2065', '\u17B4'];
    const disguised = `acct_${invisible.join('')}1`;
    const { task, approvalId } = await approvalPaying(disguised, `pay invoice INV-${invisible.join('')}88 to Acme`);
    await openInbox();
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-")').waitFor();
    const text = (await card.textContent())!;
    expect(text).toContain('"destination": "acct_\\u034f\\ufe0f\\udb40\\udd00\\u180b\\u2065\\u17b41"');
    expect(await card.locator('[data-testid=purpose]').textContent()).toBe('pay invoice INV-⟨U+034F⟩⟨U+FE0F⟩⟨U+E0100⟩⟨U+180B⟩⟨U+2065⟩⟨U+17B4⟩88 to Acme');
    for (const char of invisible) expect(text).not.toContain(char);
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/deny`, {}, services.adminToken);
    await page.click('nav a[href="#/tasks"]');
    const row = page.locator(`tr[data-task-id="${task.task_id}"]`);
    await row.waitFor();
    expect(await row.locator('.details').textContent()).toContain('destination="acct_\\u034f\\ufe0f\\udb40\\udd00\\u180b\\u2065\\u17b41"');
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken);
  });

  it('names each look-alike letter in the details of an approval, which the JSON alone cannot show', async () => {
    // Cyrillic а (U+0430) and с (U+0441): "асct_1" is drawn as "acct_1", another account upstream.
    const lookalike = '\u0430\u0441ct_1';
    const { task, approvalId } = await approvalPaying(lookalike, 'pay invoice INV-91 to Acme');
    const plain = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-92 to Acme' });
    const plainId: string = (await exchange(plain.task_token, payoutUpTo(42000))).body.approval_id;
    await openInbox();
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-91")').waitFor();
    const warning = card.locator('[data-testid=non-ascii]');
    expect(await warning.textContent()).toContain('[0].constraints.destination');
    expect(await warning.textContent()).toContain('U+0430');
    expect(await warning.textContent()).toContain('U+0441');
    // Only where there is something to name: ASCII details carry no notice.
    await page.locator(`article[data-approval-id="${plainId}"] [data-testid=purpose]:has-text("INV-92")`).waitFor();
    expect(await page.locator(`article[data-approval-id="${plainId}"] [data-testid=non-ascii]`).count()).toBe(0);
    for (const id of [approvalId, plainId]) await sendJson('POST', `${services.adminUrl}/v1/approvals/${id}/deny`, {}, services.adminToken);
    for (const id of [task.task_id, plain.task_id]) await sendJson('POST', `${services.adminUrl}/v1/tasks/${id}/revoke`, {}, services.adminToken);
  });

  it('keeps every control on screen whatever the length of what agents and orchestrators send', async () => {
    const long = `pay-${'x'.repeat(1990)}`;
    const task = await createTask(services, world.orchestrator, { purpose: long });
    const approvalId: string = (await exchange(task.task_token, payoutUpTo(43000))).body.approval_id;
    const width = page.viewportSize()!.width;
    const onScreen = async (selector: string) => {
      const box = (await page.locator(selector).first().boundingBox())!;
      return box.x >= 0 && box.x + box.width <= width;
    };
    await page.click('nav a[href="#/tasks"]');
    await page.locator(`tr[data-task-id="${task.task_id}"]`).waitFor();
    expect(await onScreen(`tr[data-task-id="${task.task_id}"] button:has-text("Revoke")`)).toBe(true);
    await openInbox();
    await page.locator(`article[data-approval-id="${approvalId}"] [data-testid=purpose]:has-text("pay-xxx")`).waitFor();
    expect(await onScreen(`article[data-approval-id="${approvalId}"] button:has-text("Approve")`)).toBe(true);
    expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/deny`, {}, services.adminToken);
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken);
  });

  it("names the user whose account an approval's credential would act for", async () => {
    // Two requests alike in agent, details and purpose, for two users: two different grants.
    await insertIdentityProviderRow(services.runtime.pool, services.runtime.rowIntegrity, {
      issuer: 'https://sso.console.example',
      jwksUri: 'https://sso.console.example/jwks',
      assertingOrchestrators: ['orch-1'],
    });
    const forCeo = await createTask(services, world.orchestrator, {
      purpose: 'pay invoice INV-94 to Acme',
      user: { iss: 'https://sso.console.example', sub: 'ceo@corp.example' },
    });
    const forNobody = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-94 to Acme' });
    const ceoId: string = (await exchange(forCeo.task_token, payoutUpTo(42000))).body.approval_id;
    const nobodyId: string = (await exchange(forNobody.task_token, payoutUpTo(42000))).body.approval_id;
    await openInbox();
    const ceoCard = page.locator(`article[data-approval-id="${ceoId}"]`);
    await ceoCard.locator('[data-testid=purpose]:has-text("INV-94")').waitFor();
    await ceoCard.locator('[data-testid=acts-for]:has-text("ceo@corp.example")').waitFor();
    expect(await ceoCard.locator('[data-testid=acts-for]').textContent()).toBe('ceo@corp.example (issuer https://sso.console.example)');
    const nobodyCard = page.locator(`article[data-approval-id="${nobodyId}"]`);
    await nobodyCard.locator('[data-testid=purpose]:has-text("INV-94")').waitFor();
    expect(await nobodyCard.locator('[data-testid=acts-for]').textContent()).toBe("no user: the connector's own credential");
    for (const id of [ceoId, nobodyId]) await sendJson('POST', `${services.adminUrl}/v1/approvals/${id}/deny`, {}, services.adminToken);
    for (const id of [forCeo.task_id, forNobody.task_id]) await sendJson('POST', `${services.adminUrl}/v1/tasks/${id}/revoke`, {}, services.adminToken);
  });

  it('tells two requests alike in agent, details and purpose apart by the DPoP key their credential would be bound to', async () => {
    // An approval buys its credential only for the key it was asked with: the operator sees which.
    const key = await dpopKey();
    const tokenUrl = `${services.issuer}/oauth2/token`;
    const keyed = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-95 to Acme' });
    const bearer = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-95 to Acme' });
    const keyedId: string = (
      await postForm(
        tokenUrl,
        { ...exchangeFields(keyed.task_token, payoutUpTo(42000)), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
        { dpop: await proof(key, 'POST', tokenUrl) },
      )
    ).body.approval_id;
    const bearerId: string = (await exchange(bearer.task_token, payoutUpTo(42000))).body.approval_id;
    await openInbox();
    const keyedCard = page.locator(`article[data-approval-id="${keyedId}"]`);
    await keyedCard.locator('[data-testid=purpose]:has-text("INV-95")').waitFor();
    expect(await keyedCard.locator('[data-testid=bound-to]').textContent()).toBe(`the agent's DPoP key ${key.jkt}`);
    const bearerCard = page.locator(`article[data-approval-id="${bearerId}"]`);
    await bearerCard.locator('[data-testid=purpose]:has-text("INV-95")').waitFor();
    expect(await bearerCard.locator('[data-testid=bound-to]').textContent()).toBe('no key: a bearer credential, usable by whoever holds it');
    for (const id of [keyedId, bearerId]) await sendJson('POST', `${services.adminUrl}/v1/approvals/${id}/deny`, {}, services.adminToken);
    for (const id of [keyed.task_id, bearer.task_id]) await sendJson('POST', `${services.adminUrl}/v1/tasks/${id}/revoke`, {}, services.adminToken);
  });

  it('shows the whole of what an approval grants, however long a value, with no part scrolled out of sight', async () => {
    // "acct_1", a run of blanks, then the account that really gets paid: in a box that scrolls,
    // the end of the value (and the members below it) sat outside what the operator saw.
    const padded = `acct_1${' '.repeat(1000)}acct_666`;
    const { task, approvalId } = await approvalPaying(padded, 'pay invoice INV-93 to Acme');
    await openInbox();
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-93")').waitFor();
    const json = card.locator('pre.json');
    expect(await json.evaluate((pre) => [pre.scrollWidth <= pre.clientWidth, pre.scrollHeight <= pre.clientHeight])).toEqual([true, true]);
    expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/deny`, {}, services.adminToken);
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken);
  });

  it('does not let a link aim the timeline at another endpoint of the API', async () => {
    const evidence = () =>
      page
        .waitForRequest((request) => /^\/v1\/(?!audit$|tasks$|approvals$)/.test(new URL(request.url()).pathname))
        .then((request) => new URL(request.url()).pathname);
    // Same document, new hash: as when the operator follows a crafted link into an open console.
    const [asked] = await Promise.all([evidence(), page.goto(`${services.adminUrl}/console/#/audit?task_id=..%2Faudit%2Fverify%3F`)]);
    expect(asked).toBe('/v1/tasks/..%2Faudit%2Fverify%3F/evidence');
    await page.goto(`${services.adminUrl}/console/#/audit?task_id=..`);
    // `..` would be resolved by the browser (`/v1/evidence`): it is refused before any request.
    await page.locator('[data-testid=timeline] .error:has-text("not a valid id")').waitFor({ timeout: 10_000 });
    await page.click('nav a[href="#/tasks"]');
  });

  it('survives a link whose time filter is no date, and shows the refusal of the API', async () => {
    await page.goto(`${services.adminUrl}/console/#/audit?since=not-a-date`);
    await page.locator('.error', { hasText: 'invalid' }).waitFor({ timeout: 10_000 });
    // Still signed in, the menu still there.
    expect(await page.locator('[data-testid=who]').count()).toBe(1);
    await page.click('nav a[href="#/tasks"]');
  });

  it('keeps an open revocation with its task when a new task arrives above it', async () => {
    await page.click('nav a[href="#/approvals"]');
    await page.click('nav a[href="#/tasks"]');
    const suspect = await createTask(services, world.orchestrator, { purpose: 'sync the suspect ledger' });
    const row = page.locator(`tr[data-task-id="${suspect.task_id}"]`);
    await row.waitFor();
    await row.locator('button:has-text("Revoke")').click();
    await row.locator('input[name=reason]').fill('suspect ledger sync');
    // A task declared now is listed first, above the one being revoked.
    const arrival = await createTask(services, world.orchestrator, { purpose: 'arrives while the operator types' });
    await page.locator(`tr[data-task-id="${arrival.task_id}"]`).waitFor();
    const [revocation] = await Promise.all([
      page.waitForRequest((request) => request.method() === 'POST' && request.url().endsWith('/revoke')),
      page.click('button:has-text("Confirm revoke")'),
    ]);
    await revocation.response();
    expect(revocation.url()).toBe(`${services.adminUrl}/v1/tasks/${suspect.task_id}/revoke`);
    const read = async (id: string) => (await sendJson('GET', `${services.adminUrl}/v1/tasks/${id}`, undefined, services.adminToken)).body;
    expect(await read(suspect.task_id)).toMatchObject({ status: 'revoked', status_reason: 'suspect ledger sync' });
    expect((await read(arrival.task_id)).status).toBe('active');
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${arrival.task_id}/revoke`, {}, services.adminToken);
  });

  it('shows credentials and calls, revokes the task, and its credential dies at the gateway', async () => {
    await page.click('nav a[href="#/tasks"]');
    const row = page.locator(`tr[data-task-id="${approvedTask.task_id}"]`);
    await row.locator('[data-testid=calls]:has-text("1")').waitFor();
    expect(await row.locator('[data-testid=grants]').textContent()).toBe('1');
    expect(await row.locator('[data-testid=countdown]').textContent()).toMatch(/^\d+m \d\ds$/);
    await shot('tasks');
    await row.locator('button:has-text("Revoke")').click();
    await row.locator('input[name=reason]').fill('prompt injection suspected');
    await row.locator('button:has-text("Confirm revoke")').click();
    await row.waitFor({ state: 'detached' });
    const refused = await callGateway(liveCredential);
    expect(refused.status).toBe(401);
    const task = await sendJson('GET', `${services.adminUrl}/v1/tasks/${approvedTask.task_id}`, undefined, services.adminToken);
    expect(task.body).toMatchObject({ status: 'revoked', status_reason: 'prompt injection suspected' });
  });

  it("finds the task's timeline, verifies the chain and downloads the evidence pack", async () => {
    await openTimeline(approvedTask.task_id);
    const timeline = page.locator('[data-testid=timeline]');
    await timeline.locator('li[data-type="task.revoked"]').waitFor();
    for (const type of ['task.created', 'grant.decision', 'approval.approved', 'token.issued', 'gateway.call', 'token.revoked']) {
      expect(await timeline.locator(`li[data-type="${type}"]`).count()).toBeGreaterThan(0);
    }
    await page.waitForSelector('[data-testid=evidence-verified]:has-text("chain verified")');
    await page.click('button:has-text("Verify the chain")');
    await page.waitForSelector('[data-testid=verify-result]:has-text("Chain valid")');
    await shot('audit');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=download-evidence]')]);
    expect(download.suggestedFilename()).toBe(`writ-evidence-${approvedTask.task_id}.json`);
    const pack = JSON.parse(await readFile(await download.path(), 'utf8'));
    expect(pack.task.task_id).toBe(approvedTask.task_id);
    expect(pack.chain.verified).toBe(true);
    expect(pack.events.map((event: { type: string }) => event.type)).toEqual(expect.arrayContaining(['token.issued', 'gateway.call', 'task.revoked']));
  });

  it("loads a task's evidence once and on request, never on a timer (each answer walks the audit chain)", async () => {
    // The timeline of the previous step is open.
    const evidence: string[] = [];
    const onRequest = (request: Request) => {
      if (new URL(request.url()).pathname.endsWith('/evidence')) evidence.push(request.url());
    };
    page.on('request', onRequest);
    // The top bar's approvals count is polled every 3 s: four of its polls span more than 9 s,
    // in which a timeline polling its evidence every 5 s would have asked again.
    for (let i = 0; i < 4; i += 1) await page.waitForRequest((request) => new URL(request.url()).pathname === '/v1/approvals');
    expect(evidence).toEqual([]);
    await Promise.all([page.waitForResponse((response) => response.url().endsWith('/evidence')), page.click('[data-testid=reload-evidence]')]);
    page.off('request', onRequest);
    expect(evidence).toEqual([`${services.adminUrl}/v1/tasks/${approvedTask.task_id}/evidence`]);
  });

  /**
   * Opens a task's timeline from the Audit page's filter form, as an admin would. Clicking the
   * nav link from `#/audit?task_id=…` changes the route without remounting the page, and its
   * form then takes the new route's (empty) filters: at machine speed that can land after the
   * typing, and the form is sent empty. Typed and sent again until the route names the task.
   */
  async function openTimeline(taskId: string): Promise<void> {
    await page.click('nav a[href="#/audit"]');
    for (let attempt = 1; ; attempt += 1) {
      await page.fill('input[name=task_id]', taskId);
      await page.click('form.filters button[type=submit]');
      try {
        await page.waitForURL(`**/console/#/audit?task_id=${taskId}`, { timeout: 5_000 });
        return;
      } catch (error) {
        if (attempt === 3) throw error;
      }
    }
  }

  /** `count` credentials of `taskId`, written straight to the table (minting them one exchange at a time would take seconds), one second apart, oldest first. */
  const seedGrants = (taskId: string, count: number, prefix: string) =>
    services.runtime.pool.query(
      `INSERT INTO access_tokens (jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, max_uses, issued_at, expires_at)
       SELECT $2 || lpad(g::text, 4, '0'), 'connector', 'agent-1', 'agent-1', $1, 'payments', 'payouts.create', 'write', $3::jsonb, 1,
              now() - interval '1 hour' + g * interval '1 second', now() + interval '10 minutes'
         FROM generate_series(1, $4::int) g`,
      [taskId, prefix, JSON.stringify(payoutUpTo(4200)), count],
    );

  it('shows every credential of a task, following grants_next_cursor past the first 100, and keeps them on a refused page', async () => {
    const task = await createTask(services, world.orchestrator, { purpose: 'reconcile 230 payouts' });
    await seedGrants(task.task_id, 230, 'console-grant-');
    await openTimeline(task.task_id);
    const grants = page.locator('[data-testid=timeline] [data-testid=grants-table] tbody tr');
    await page.waitForSelector('[data-testid=grants-count]:has-text("100 of 230 shown")');
    expect(await grants.count()).toBe(100);
    // The next page is refused once (the API is unavailable): said so, the rows kept, the button there to try again.
    let refusals = 0;
    await page.route('**/v1/tasks/*?grants_cursor=*', (route) => {
      refusals += 1;
      return route.fulfill({
        status: 503,
        headers: { 'retry-after': '7', 'content-type': 'application/json' },
        body: '{"message":"the database is unavailable"}',
      });
    });
    await page.click('[data-testid=more-grants]');
    await page.waitForSelector('[data-testid=timeline] .more [role=alert]:has-text("the database is unavailable")');
    expect(refusals).toBe(1);
    expect(await grants.count()).toBe(100);
    await page.unroute('**/v1/tasks/*?grants_cursor=*');
    await page.click('[data-testid=more-grants]');
    await page.waitForSelector('[data-testid=grants-count]:has-text("200 of 230 shown")');
    expect(await page.locator('[data-testid=timeline] .more [role=alert]').count()).toBe(0);
    await page.click('[data-testid=more-grants]');
    await page.waitForSelector('[data-testid=grants-count]:has-text("230 of 230 shown")');
    expect(await page.locator('[data-testid=more-grants]').count()).toBe(0);
    const jtis = await grants.evaluateAll((rows) => rows.map((row) => row.getAttribute('data-jti')));
    expect(jtis).toEqual(Array.from({ length: 230 }, (_, i) => `console-grant-${String(i + 1).padStart(4, '0')}`));
    expect(await grants.first().textContent()).toContain('payouts.create');
    // Reloading the evidence is a fresh read: the list starts again from its first page.
    await page.click('[data-testid=reload-evidence]');
    await page.waitForSelector('[data-testid=grants-count]:has-text("100 of 230 shown")');
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken);
  });

  it('registers a connector after fixing the field the API refused; the secret is never shown', async () => {
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/connectors"]');
    await page.click('button:has-text("New connector")');
    const editor = page.locator('[data-testid=editor]');
    await editor.locator('input[name=id]').fill('chat');
    await editor.locator('input[name=name]').fill('Team chat');
    await editor.locator('input[name=base_url]').fill('ftp://chat.example');
    await editor
      .locator('textarea[name=operations]')
      .fill(JSON.stringify([{ name: 'messages.post', method: 'POST', path: '/api/messages', risk: 'write', constraints: {} }]));
    await editor.locator('textarea[name=credential]').fill(JSON.stringify({ type: 'bearer', token: CHAT_SECRET }));
    await editor.locator('button[type=submit]').click();
    const baseUrlError = editor.locator('[data-field=base_url] .field-error');
    await baseUrlError.waitFor();
    await shot('registry-field-error');
    await editor.locator('input[name=base_url]').fill('https://chat.example');
    await editor.locator('button[type=submit]').click();
    await editor.waitFor({ state: 'detached' });
    const row = page.locator('[data-testid=registry-table] tr[data-id="chat"]');
    await row.waitFor();
    expect(await row.textContent()).toContain('hmac-sha256:');
    expect(await page.content()).not.toContain(CHAT_SECRET);
    await shot('registry');
    // Edit: the stored credential is not shown back; saving without one keeps it.
    await row.locator('button:has-text("Edit")').click();
    expect(await editor.locator('textarea[name=credential]').inputValue()).toBe('');
    await editor.locator('input[name=name]').fill('Team chat (ops)');
    await editor.locator('button[type=submit]').click();
    await row.locator('text=Team chat (ops)').waitFor();
    const stored = await sendJson('GET', `${services.adminUrl}/v1/connectors/chat`, undefined, services.adminToken);
    expect(stored.body.credential).toMatchObject({ type: 'bearer', fingerprint: expect.stringMatching(/^hmac-sha256:/) });
    // Another admin changes it while this editor is open: saving would overwrite that, so it is refused.
    const read = page.waitForResponse((response) => response.url().endsWith('/v1/connectors/chat') && response.request().method() === 'GET');
    await row.locator('button:has-text("Edit")').click();
    await read;
    const meanwhile = await sendJson('PATCH', `${services.adminUrl}/v1/connectors/chat`, { name: 'Chat (renamed elsewhere)' }, services.adminToken);
    expect(meanwhile.status).toBe(200);
    await editor.locator('input[name=name]').fill('Team chat (stale)');
    const [patch] = await Promise.all([page.waitForRequest((request) => request.method() === 'PATCH'), editor.locator('button[type=submit]').click()]);
    expect(patch.headers()['if-match']).toMatch(/^"[A-Za-z0-9_-]+"$/);
    expect((await patch.response())!.status()).toBe(412);
    await editor.locator('.error', { hasText: 'changed since' }).waitFor();
    expect((await sendJson('GET', `${services.adminUrl}/v1/connectors/chat`, undefined, services.adminToken)).body.name).toBe('Chat (renamed elsewhere)');
    await editor.locator('button:has-text("Cancel")').click();
    await row.locator('button:has-text("Delete")').click();
    await row.locator('button:has-text("Confirm delete")').click();
    await row.waitFor({ state: 'detached' });
    // Suspend and reactivate an agent.
    await page.click('a[href="#/registry/agents"]');
    const agent = page.locator('[data-testid=registry-table] tr[data-id="agent-2"]');
    await agent.locator('button:has-text("Suspend")').click();
    await agent.locator('.pill-suspended').waitFor();
    expect((await sendJson('GET', `${services.adminUrl}/v1/agents/agent-2`, undefined, services.adminToken)).body.status).toBe('suspended');
    await agent.locator('button:has-text("Reactivate")').click();
    await agent.locator('.pill-active').waitFor();
  });

  it('never saves an edit over a change it has not read: not before its fresh read, nor reverting what that read brought', async () => {
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/agents"]');
    const row = page.locator('[data-testid=registry-table] tr[data-id="agent-2"]');
    await row.waitFor();
    const patches: Request[] = [];
    const onRequest = (request: Request) => {
      if (request.method() === 'PATCH') patches.push(request);
    };
    page.on('request', onRequest);
    // The editor's fresh read of the agent is held until released.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route(`${services.adminUrl}/v1/agents/agent-2`, async (route) => {
      if (route.request().method() === 'GET') await held;
      // A request the page gave up on meanwhile is already handled.
      await route.continue().catch(() => undefined);
    });
    try {
      await row.locator('button:has-text("Edit")').click();
      const editor = page.locator('[data-testid=editor]');
      // Another admin renames the agent after the list was read, before the editor's read answers.
      expect((await sendJson('PATCH', `${services.adminUrl}/v1/agents/agent-2`, { name: 'Renamed elsewhere' }, services.adminToken)).status).toBe(200);
      await editor.locator('input[name=description]').fill('typed before the read answered');
      // Saved before the version is known: nothing is sent (it would carry no If-Match).
      await editor.locator('button[type=submit]').click();
      await page.waitForTimeout(300);
      expect(patches).toEqual([]);
      const read = page.waitForResponse((response) => response.url().endsWith('/v1/agents/agent-2') && response.request().method() === 'GET');
      release();
      await read;
      // Saved once read: the description typed, and the name as the other admin left it.
      const [patch] = await Promise.all([page.waitForRequest((request) => request.method() === 'PATCH'), editor.locator('button[type=submit]').click()]);
      expect(patch.headers()['if-match']).toMatch(/^"[A-Za-z0-9_-]+"$/);
      expect((await patch.response())!.status()).toBe(200);
      await editor.waitFor({ state: 'detached' });
      const stored = await sendJson('GET', `${services.adminUrl}/v1/agents/agent-2`, undefined, services.adminToken);
      expect(stored.body).toMatchObject({ name: 'Renamed elsewhere', description: 'typed before the read answered' });
    } finally {
      release();
      await page.unroute(`${services.adminUrl}/v1/agents/agent-2`);
      page.off('request', onRequest);
    }
  });

  it('keeps an open deletion with its connector when the list moves under it', async () => {
    const connector = (id: string) => ({
      id,
      name: id,
      base_url: `https://${id}.example`,
      operations: [{ name: 'ping', method: 'GET', path: '/ping', risk: 'read', constraints: {} }],
    });
    expect((await sendJson('POST', `${services.adminUrl}/v1/connectors`, connector('retired'), services.adminToken)).status).toBe(201);
    await page.click('nav a[href="#/tasks"]');
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/connectors"]');
    const row = page.locator('[data-testid=registry-table] tr[data-id="retired"]');
    await row.locator('button:has-text("Delete")').click();
    // Listed by id: a connector registered meanwhile (by another operator) lands above it.
    expect((await sendJson('POST', `${services.adminUrl}/v1/connectors`, connector('billing'), services.adminToken)).status).toBe(201);
    await page.locator('[data-testid=registry-table] tr[data-id="billing"]').waitFor();
    const [deletion] = await Promise.all([page.waitForRequest((request) => request.method() === 'DELETE'), page.click('button:has-text("Confirm delete")')]);
    await deletion.response();
    expect(deletion.url()).toBe(`${services.adminUrl}/v1/connectors/retired`);
    expect((await sendJson('GET', `${services.adminUrl}/v1/connectors/billing`, undefined, services.adminToken)).status).toBe(200);
    await sendJson('DELETE', `${services.adminUrl}/v1/connectors/billing`, undefined, services.adminToken);
  });

  it('asks for a token again over the page when the session ends, and keeps what was typed to save it then', async () => {
    const created = await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'ops-on-call', role: 'operator' }, services.adminToken);
    expect(created.status).toBe(201);
    await signIn(created.body.token);
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/connectors"]');
    await page.click('button:has-text("New connector")');
    const editor = page.locator('[data-testid=editor]');
    const operations = JSON.stringify([{ name: 'entries.list', method: 'GET', path: '/v1/entries', risk: 'read', constraints: {} }]);
    await editor.locator('input[name=id]').fill('ledger');
    await editor.locator('input[name=name]').fill('Ledger typed at length');
    await editor.locator('input[name=base_url]').fill('https://ledger.example');
    await editor.locator('textarea[name=operations]').fill(operations);
    // The token is revoked (or expires) while the form is being filled in.
    expect((await sendJson('DELETE', `${services.adminUrl}/v1/admin-tokens/${created.body.id}`, undefined, services.adminToken)).status).toBeLessThan(300);
    await editor.locator('button[type=submit]').click();
    await page.waitForSelector('[role=dialog] [data-testid=session-ended]');
    // The form is still there under the dialog, as typed, and out of reach until signed in again.
    expect(await editor.locator('input[name=name]').inputValue()).toBe('Ledger typed at length');
    expect(await page.locator('.shell').getAttribute('inert')).not.toBeNull();
    // A wrong token keeps the dialog, and the page.
    await page.fill('[role=dialog] input[name=token]', 'writ_admin_not-a-real-token');
    await page.click('[role=dialog] button[type=submit]');
    await page.waitForSelector('[role=dialog] >> text=unknown or revoked');
    await page.fill('[role=dialog] input[name=token]', services.adminToken);
    await page.click('[role=dialog] button[type=submit]');
    await page.locator('[role=dialog]').waitFor({ state: 'detached' });
    expect(await page.textContent('[data-testid=who]')).toContain('admin');
    expect(await editor.locator('input[name=base_url]').inputValue()).toBe('https://ledger.example');
    expect(await editor.locator('textarea[name=operations]').inputValue()).toBe(operations);
    await editor.locator('button[type=submit]').click();
    await editor.waitFor({ state: 'detached' });
    const stored = await sendJson('GET', `${services.adminUrl}/v1/connectors/ledger`, undefined, services.adminToken);
    expect(stored.body).toMatchObject({ name: 'Ledger typed at length', base_url: 'https://ledger.example' });
    // The session stays signed in: no poll answered for the old token signs the new one out.
    await page.waitForTimeout(3500);
    expect(await page.locator('[role=dialog]').count()).toBe(0);
    await sendJson('DELETE', `${services.adminUrl}/v1/connectors/ledger`, undefined, services.adminToken);
  });

  it('says when to try again on a 503, never "no task" for a list it could not read, and keeps a typed reason', async () => {
    const unavailable = { status: 503, headers: { 'retry-after': '7', 'content-type': 'application/json' }, body: '{"message":"the database is unavailable"}' };
    const task = await createTask(services, world.orchestrator, { purpose: 'settle the March ledger' });
    await page.click('nav a[href="#/audit"]');
    await page.route('**/v1/tasks?status=active*', (route) => route.fulfill(unavailable));
    await page.click('nav a[href="#/tasks"]');
    await page.waitForSelector('[data-testid=tasks-table] >> xpath=.. >> [role=alert]:has-text("the database is unavailable (HTTP 503: try again in 7 s)")');
    expect(await page.locator('text=No active task.').count()).toBe(0);
    await page.unroute('**/v1/tasks?status=active*');
    const row = page.locator(`tr[data-task-id="${task.task_id}"]`);
    await row.waitFor();
    // A revocation refused for a while: the reason typed stays, with when to try again.
    await page.route('**/v1/tasks/*/revoke', (route) => route.fulfill(unavailable));
    await row.locator('button:has-text("Revoke")').click();
    await row.locator('input[name=reason]').fill('ledger agent looping on refunds');
    await row.locator('button:has-text("Confirm revoke")').click();
    await row.locator('[role=alert]:has-text("try again in 7 s")').waitFor();
    expect(await row.locator('input[name=reason]').inputValue()).toBe('ledger agent looping on refunds');
    await page.unroute('**/v1/tasks/*/revoke');
    await row.locator('button:has-text("Confirm revoke")').click();
    await row.waitFor({ state: 'detached' });
    const revoked = await sendJson('GET', `${services.adminUrl}/v1/tasks/${task.task_id}`, undefined, services.adminToken);
    expect(revoked.body).toMatchObject({ status: 'revoked', status_reason: 'ledger agent looping on refunds' });
  });

  it('reaches a pending request that a flood of newer ones pushed off the first page of the inbox', async () => {
    // Before the policy upload below, which drops the approval threshold.
    const { task, approvalId } = await approvalPaying('acct_1', 'pay invoice INV-77 to Acme');
    expect(approvalId).toEqual(expect.any(String));
    // An agent floods the inbox with newer requests (written straight to the table: a hundred exchanges take seconds).
    const { rows } = await services.runtime.pool.query<{ id: string }>(
      `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, requested_at, expires_at)
       SELECT gen_random_uuid(), task_id, agent_id, connector_id, authorization_details, reasons, policy_version, 'pending',
              now() + g * interval '1 millisecond', expires_at
         FROM approvals, generate_series(1, 105) g WHERE id = $1
       RETURNING id`,
      [approvalId],
    );
    await page.click('nav a[href="#/tasks"]');
    await page.click('nav a[href="#/approvals"]');
    await page.waitForSelector('[data-testid=pending-count]:has-text("100+ pending")');
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    expect(await card.count()).toBe(0);
    await page.click('[data-testid=more-pending]');
    // What the next page brings waits for the person to ask, as any new request does: no card moves on its own.
    await page.locator('[data-testid=update-approvals]:has-text("new")').click();
    await card.locator('[data-testid=purpose]:has-text("INV-77")').waitFor();
    await card.locator('input[name=note]').fill('checked against INV-77');
    await card.locator('button:has-text("Deny")').click();
    await card.locator('text=Denied by you.').waitFor();
    expect(await approvalStatus(approvalId)).toBe('denied');
    await services.runtime.pool.query(`UPDATE approvals SET status = 'denied', decided_at = now() WHERE id = ANY($1::uuid[])`, [rows.map((row) => row.id)]);
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken);
  });

  it('never goes blank on an answer a page cannot show: it says why, and the rest of the console works', async () => {
    await page.click('nav a[href="#/audit"]');
    // An answer of another shape (an API of another version behind the same address, say): a task without its counters.
    await page.route('**/v1/tasks?status=active*', (route) =>
      route.fulfill({
        status: 200,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ items: [{ task_id: 'c0ffee00-0000-4000-8000-000000000001', status: 'active', purpose: 'x', allowed: [] }], next_cursor: null }),
      }),
    );
    await page.click('nav a[href="#/tasks"]');
    await page.waitForSelector('[data-testid=page-failed] [role=alert]:has-text("It failed while showing an answer")');
    expect(await page.locator('[data-testid=who]').count()).toBe(1);
    await page.unroute('**/v1/tasks?status=active*');
    await page.click('nav a[href="#/approvals"]');
    await page.waitForSelector('[data-testid=pending-count]');
    await page.click('nav a[href="#/tasks"]');
    await page.waitForSelector('[data-testid=tasks-table]');
    expect(await page.locator('[data-testid=page-failed]').count()).toBe(0);
  });

  it('lets an admin create a viewer token, shown once, and rotate the signing key', async () => {
    await page.click('nav a[href="#/access"]');
    const form = page.locator('[data-testid=new-admin-token]');
    await form.locator('input[name=name]').fill('auditor');
    await form.locator('select[name=role]').selectOption('viewer');
    // A day unless chosen otherwise; here 30 days.
    expect(await form.locator('select[name=expires_in]').inputValue()).toBe('86400');
    await form.locator('select[name=expires_in]').selectOption('2592000');
    await form.locator('button[type=submit]').click();
    viewerToken = await form.locator('[data-testid=created-token]').inputValue();
    expect(viewerToken).toMatch(/^writ_admin_/);
    await page.locator('[data-testid=admin-tokens] tr', { hasText: 'auditor' }).waitFor();
    const listed = (await sendJson('GET', `${services.adminUrl}/v1/admin-tokens?limit=200`, undefined, services.adminToken)).body.items.find(
      (token: { name: string }) => token.name === 'auditor',
    );
    expect(Date.parse(listed.expires_at) - Date.parse(listed.created_at)).toBe(30 * 24 * 3600 * 1000);
    expect(await page.locator('[data-testid=admin-tokens] tr', { hasText: 'auditor' }).locator('td').nth(4).textContent()).not.toBe('never');
    const keys = page.locator('[data-testid=signing-keys] tbody tr');
    await keys.first().waitFor();
    const before = await keys.count();
    await page.click('button:has-text("Rotate the signing key")');
    await keys.nth(before).waitFor();
    await shot('access');
    await form.locator('button:has-text("Done")').click();
    expect(await page.locator('[data-testid=created-token]').count()).toBe(0);
  });

  it('shows a viewer no write control, and the API still refuses the viewer', async () => {
    const task = await createTask(services, world.orchestrator, { purpose: 'read balances' });
    await exchange(task.task_token, payoutUpTo(20000));
    await page.click('button:has-text("Sign out")');
    await signIn(viewerToken);
    expect(await page.textContent('[data-testid=who]')).toContain('viewer');
    expect(await page.locator('nav a[href="#/access"]').count()).toBe(0);
    await page.locator(`tr[data-task-id="${task.task_id}"]`).waitFor();
    expect(await page.locator('button:has-text("Revoke")').count()).toBe(0);
    await page.click('nav a[href="#/approvals"]');
    await page.locator(`[data-task-id="${task.task_id}"]`).waitFor();
    expect(await page.locator('button:has-text("Approve"), button:has-text("Deny")').count()).toBe(0);
    await page.click('nav a[href="#/registry"]');
    await page.locator('[data-testid=registry-table] tr[data-id="agent-1"]').waitFor();
    expect(await page.locator('button:has-text("New"), button:has-text("Edit"), button:has-text("Delete"), button:has-text("Suspend")').count()).toBe(0);
    await page.click('nav a[href="#/policies"]');
    await page.locator('[data-testid=active-policy]').waitFor();
    expect(await page.locator('[data-testid=dry-run], [data-testid=policy-upload]').count()).toBe(0);
    await page.click('nav a[href="#/approvals"]');
    await page.locator(`article[data-task-id="${task.task_id}"]`).waitFor();
    await shot('viewer-approvals');
    // The same origin, the viewer's token: the API refuses what the console hides.
    const status = await page.evaluate(
      async ([taskId, token]) =>
        (
          await fetch(`/v1/tasks/${taskId}/revoke`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: '{}',
          })
        ).status,
      [task.task_id, viewerToken],
    );
    expect(status).toBe(403);
    await page.click('button:has-text("Sign out")');
    await signIn(services.adminToken);
  });
  it('dry-runs a request against the active policy and shows the decision and reasons', async () => {
    const task = await createTask(services, world.orchestrator, { purpose: 'pay invoice INV-77' });
    await page.click('nav a[href="#/policies"]');
    const form = page.locator('[data-testid=dry-run]');
    await form.locator('input[name=task_id]').fill(task.task_id);
    await form.locator('textarea[name=authorization_details]').fill(JSON.stringify(payoutUpTo(5000)));
    await form.locator('button[type=submit]').click();
    await form.locator('[data-testid=decision]:has-text("ALLOW")').waitFor();
    await form.locator('textarea[name=authorization_details]').fill(JSON.stringify(payoutUpTo(42000)));
    await form.locator('button[type=submit]').click();
    await form.locator('text=requires approval').waitFor();
    expect(await form.locator('[data-testid=reasons]').textContent()).toContain('above the approval threshold');
  });

  it('uploads a policy bundle, which becomes the active version in the history', async () => {
    const upload = page.locator('[data-testid=policy-upload]');
    await upload.locator('input[name=bundle]').setInputFiles(join(__dirname, '..', 'policies', 'dist', 'bundle.tar.gz'));
    await upload.locator('button[type=submit]').click();
    await upload.locator('text=now active on every instance').waitFor();
    const active = await sendJson('GET', `${services.adminUrl}/v1/policies`, undefined, services.adminToken);
    const history = page.locator('[data-testid=policy-history] tr', { hasText: 'upload' });
    await history.waitFor();
    expect(await history.textContent()).toContain(active.body.version.slice(0, 16));
    await page.click('nav a[href="#/policies"]');
    await shot('policies');
    expect(cspViolations).toEqual([]);
    expect(await page.evaluate<string[]>('window.__csp || []')).toEqual([]);
  });

  it('shows bidi controls in the names operators and admins give, as in what agents send', async () => {
    // Names refuse C0 controls only: U+202E makes "Invoice agent" + RLO + "lacol" read as "Invoice agent local" reversed.
    const name = 'Invoice agent \u202Elacol\u034F';
    const { jwks } = (await sendJson('GET', `${services.adminUrl}/v1/agents/agent-1`, undefined, services.adminToken)).body;
    const agent = await sendJson('POST', `${services.adminUrl}/v1/agents`, { id: 'agent-disguised', name, jwks }, services.adminToken);
    expect(agent.status).toBe(201);
    const token = await sendJson(
      'POST',
      `${services.adminUrl}/v1/admin-tokens`,
      { name: `ops \u202Enimda`, role: 'viewer', expires_in: 3600 },
      services.adminToken,
    );
    expect(token.status).toBe(201);
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/agents"]');
    const row = page.locator('[data-testid=registry-table] tr[data-id="agent-disguised"]');
    await row.waitFor();
    expect(await row.locator('td').nth(1).textContent()).toBe('Invoice agent ⟨U+202E⟩lacol⟨U+034F⟩');
    await page.click('nav a[href="#/access"]');
    const listed = page.locator(`[data-testid=admin-tokens] tr[data-id="${token.body.id}"]`);
    await listed.waitFor();
    expect(await listed.locator('td').first().textContent()).toBe('ops ⟨U+202E⟩nimda');
    await sendJson('DELETE', `${services.adminUrl}/v1/admin-tokens/${token.body.id}`, undefined, services.adminToken);
    await sendJson('DELETE', `${services.adminUrl}/v1/agents/agent-disguised`, undefined, services.adminToken);
  });

  it('reaches every active task past the first page, to revoke the one that needs it', async () => {
    await signIn(services.adminToken);
    // Away from the live list while the tasks are declared: its first poll then sees them all.
    await page.click('nav a[href="#/audit"]');
    // Older than the hundred after it: listed newest first, it is on the second page.
    const runaway = await createTask(services, world.orchestrator, { purpose: 'runaway refund loop' });
    // A task's created_at is to the second, and tasks of one second are listed by id: the others come a second later.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const others: string[] = [];
    for (let done = 0; done < 105; done += 15)
      others.push(
        ...(await Promise.all(Array.from({ length: 15 }, (_, i) => createTask(services, world.orchestrator, { purpose: `batch payout ${done + i}` })))).map(
          (task) => task.task_id,
        ),
      );
    await page.click('nav a[href="#/tasks"]');
    await page.waitForSelector('[data-testid=active-count]:has-text("100+ active")');
    const row = page.locator(`tr[data-task-id="${runaway.task_id}"]`);
    expect(await row.count()).toBe(0);
    await page.click('[data-testid=more-tasks]');
    await row.waitFor();
    await page.locator('[data-testid=more-tasks]').waitFor({ state: 'detached' });
    // The second page stays live: a task ended elsewhere leaves it at the next poll.
    const endedElsewhere = others[0];
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${endedElsewhere}/revoke`, {}, services.adminToken);
    await page.locator(`tr[data-task-id="${endedElsewhere}"]`).waitFor({ state: 'detached' });
    await row.locator('button:has-text("Revoke")').click();
    await row.locator('input[name=reason]').fill('refund loop');
    await row.locator('button:has-text("Confirm revoke")').click();
    await row.waitFor({ state: 'detached' });
    expect((await sendJson('GET', `${services.adminUrl}/v1/tasks/${runaway.task_id}`, undefined, services.adminToken)).body.status).toBe('revoked');
    for (let done = 0; done < others.length; done += 15)
      await Promise.all(others.slice(done, done + 15).map((id) => sendJson('POST', `${services.adminUrl}/v1/tasks/${id}/revoke`, {}, services.adminToken)));
  });

  it('pages the registry past its first 200 entries', async () => {
    // Ids sorting before "payments": it moves to the second page.
    for (let i = 0; i < 205; i += 1) await seedConnector(services.runtime.pool, `bulk-${String(i).padStart(3, '0')}`);
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/connectors"]');
    const rows = page.locator('[data-testid=registry-table] tbody tr');
    await page.locator('[data-testid=registry-table] tr[data-id="bulk-199"]').waitFor();
    expect(await page.locator('[data-testid=registry-table] tr[data-id="payments"]').count()).toBe(0);
    await page.click('[data-testid=more-registry]');
    await page.locator('[data-testid=registry-table] tr[data-id="payments"]').waitFor();
    expect(await rows.count()).toBeGreaterThan(205);
    await services.runtime.pool.query(`DELETE FROM connectors WHERE id LIKE 'bulk-%'`);
  });

  it("lists users' connected accounts and identity providers page by page, filtered, with hidden characters shown", async () => {
    const issuer = 'https://sso.paging.example';
    await services.runtime.pool.query(
      `INSERT INTO identity_providers (issuer, jwks_uri, audience, asserting_orchestrators) VALUES ($1, $1 || '/jwks', 'writ', '{orch-1}')`,
      [issuer],
    );
    // 205 users connected an hour ago, newest first: user-0205 down to user-0001; and one disguised, newest of all.
    await services.runtime.pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, connected_at)
       SELECT gen_random_uuid(), 'payments', $1, 'user-' || lpad(n::text, 4, '0'), 'active', '{read}', '\\x00', now() - interval '1 hour' + n * interval '1 second'
         FROM generate_series(1, 205) AS n`,
      [issuer],
    );
    await services.runtime.pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, connected_at, broken_error)
       VALUES (gen_random_uuid(), 'payments', $1, $2, 'broken', '{read}', '\\x00', now(), $3)`,
      [issuer, 'ceo\u202E@corp', '<b>invalid_grant</b>'],
    );
    await page.click('nav a[href="#/connections"]');
    const rows = page.locator('[data-testid=connections-table] tbody tr');
    await page.locator('[data-testid=connections-table] >> text=user-0107').waitFor();
    expect(await rows.count()).toBe(100);
    expect(await rows.first().locator('[data-testid=user-sub]').textContent()).toBe('ceo⟨U+202E⟩@corp');
    expect(await rows.first().textContent()).toContain('<b>invalid_grant</b>');
    expect(await page.locator('[data-testid=connections-table] b').count()).toBe(0);
    await page.click('[data-testid=more-connections]');
    await page.locator('[data-testid=connections-table] >> text=user-0007').waitFor();
    await page.click('[data-testid=more-connections]');
    await page.locator('[data-testid=connections-table] >> text=user-0001').waitFor();
    expect(await rows.count()).toBe(206);
    expect(await page.locator('[data-testid=more-connections]').count()).toBe(0);
    await page.locator(`[data-testid=identity-providers] td:text-is("${issuer}")`).waitFor();
    // A filter is the API's: one user's connections.
    await page.fill('input[name=user_iss]', issuer);
    await page.fill('input[name=user_sub]', 'user-0042');
    await page.click('form.filters button[type=submit]');
    await page.waitForURL('**/console/#/connections?**user_sub=user-0042');
    await page.locator('[data-testid=connections-table] tbody tr', { hasText: 'user-0205' }).waitFor({ state: 'detached' });
    expect(await rows.count()).toBe(1);
    expect(await rows.first().locator('[data-testid=user-sub]').textContent()).toBe('user-0042');
    await services.runtime.pool.query(`DELETE FROM connected_accounts WHERE user_issuer = $1`, [issuer]);
  });

  /** No CSP violation on this document (the init script's record) nor in Chromium's console since the suite began. */
  const expectNoCspViolation = async () => {
    expect(await page.evaluate<string[]>('window.__csp || []')).toEqual([]);
    expect(cspViolations).toEqual([]);
  };

  it('browses ended tasks by status, agent and orchestrator, page by page, and opens one for its timeline and evidence', async () => {
    await signIn(services.adminToken);
    // The oldest of the revoked tasks: with 50 a page it is on the second.
    const ended = await createTask(services, world.orchestrator, { purpose: 'close the ledger for Q3 \u202E3Q' });
    expect((await sendJson('POST', `${services.adminUrl}/v1/tasks/${ended.task_id}/revoke`, { reason: 'ledger closed' }, services.adminToken)).status).toBe(
      200,
    );
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const newer: string[] = [];
    for (let done = 0; done < 50; done += 10)
      newer.push(
        ...(await Promise.all(Array.from({ length: 10 }, (_, i) => createTask(services, world.orchestrator, { purpose: `ended batch ${done + i}` })))).map(
          (task) => task.task_id,
        ),
      );
    await Promise.all(newer.map((id) => sendJson('POST', `${services.adminUrl}/v1/tasks/${id}/revoke`, {}, services.adminToken)));
    const live = await createTask(services, world.orchestrator, { purpose: 'still running' });
    // The live list shows only active tasks: the ended one is out of its reach.
    await page.locator(`[data-testid=tasks-table] tr[data-task-id="${live.task_id}"]`).waitFor();
    expect(await page.locator(`tr[data-task-id="${ended.task_id}"]`).count()).toBe(0);
    await page.click('nav a[href="#/task-search"]');
    const table = page.locator('[data-testid=task-search-table]');
    // Unfiltered: every status, the live task (the newest) first.
    await table.locator(`tr[data-task-id="${live.task_id}"]`).waitFor();
    const filters = page.locator('[data-testid=task-filters]');
    await filters.locator('select[name=status]').selectOption('revoked');
    await filters.locator('input[name=agent_id]').fill(world.agent.id);
    await filters.locator('input[name=orchestrator_id]').fill(world.orchestrator.id);
    await filters.locator('button[type=submit]').click();
    await page.waitForURL(`**/console/#/task-search?status=revoked&agent_id=${world.agent.id}&orchestrator_id=${world.orchestrator.id}`);
    await table.locator(`tr[data-task-id="${live.task_id}"]`).waitFor({ state: 'detached' });
    await table.locator(`tr[data-task-id="${newer[49]}"]`).waitFor();
    // The first rows only: the whole page is 50 tasks long.
    if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, 'task-search.png') });
    const row = table.locator(`tr[data-task-id="${ended.task_id}"]`);
    expect(await row.count()).toBe(0);
    await page.click('[data-testid=more-task-search]');
    await row.waitFor();
    expect(await row.locator('[data-testid=status]').textContent()).toBe('revokedledger closed');
    expect(await row.locator('.purpose').textContent()).toBe('close the ledger for Q3 ⟨U+202E⟩3Q');
    // Another orchestrator's tasks: none, said as such only from an answer.
    await filters.locator('input[name=orchestrator_id]').fill('orch-nobody');
    await filters.locator('button[type=submit]').click();
    await page.waitForSelector('text=No task matches.');
    // A status from a link that is no status: the API's refusal is shown, not an unfiltered list.
    await page.goto(`${services.adminUrl}/console/#/task-search?status=bogus`);
    await page.locator('[data-testid=task-search-table] >> xpath=.. >> [role=alert]:has-text("the query is invalid")').waitFor();
    expect(await page.locator('[data-testid=task-search-table] tbody tr').count()).toBe(0);
    // The ended task's timeline and evidence.
    await page.goto(`${services.adminUrl}/console/#/task-search?status=revoked&agent_id=${world.agent.id}`);
    await page.locator('[data-testid=task-search-table] tbody tr').first().waitFor();
    await page.click('[data-testid=more-task-search]');
    // The form shows the filters of the link followed, not those typed before it.
    expect(await filters.locator('input[name=orchestrator_id]').inputValue()).toBe('');
    expect(await filters.locator('select[name=status]').inputValue()).toBe('revoked');
    await row.locator('[data-testid=open-timeline]').click();
    await page.waitForURL(`**/console/#/audit?task_id=${ended.task_id}`);
    await page.locator('[data-testid=timeline] li[data-type="task.revoked"]').waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=download-evidence]')]);
    expect(download.suggestedFilename()).toBe(`writ-evidence-${ended.task_id}.json`);
    await expectNoCspViolation();
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${live.task_id}/revoke`, {}, services.adminToken);
  });

  const LINK_ISSUER = 'https://sso.console-links.example';
  let linkConnector: string | undefined;
  /** A connector whose users connect accounts, and a trusted identity provider for them (once). */
  const connectedAccountsWorld = async () => {
    if (linkConnector) return linkConnector;
    linkConnector = 'calendar';
    const created = await sendJson(
      'POST',
      `${services.adminUrl}/v1/connectors`,
      {
        id: linkConnector,
        name: 'Calendar',
        base_url: payments.url,
        credential: {
          type: 'oauth2_authorization_code',
          authorization_url: `${payments.url}/authorize`,
          token_url: `${payments.url}/token`,
          revocation_url: `${payments.url}/revoke`,
          client_id: 'writ-app',
          client_secret: 'calendar-app-secret',
          scopes: ['read'],
        },
        operations: [{ name: 'events.list', method: 'GET', path: '/v1/events', risk: 'read', constraints: {} }],
      },
      services.adminToken,
    );
    expect(created.status).toBe(201);
    await insertIdentityProviderRow(services.runtime.pool, services.runtime.rowIntegrity, { issuer: LINK_ISSUER, jwksUri: `${LINK_ISSUER}/jwks` });
    return linkConnector;
  };
  const linksFor = async (subject: string) =>
    (
      await services.runtime.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM connect_links WHERE user_issuer = $1 AND user_subject = $2`, [
        LINK_ISSUER,
        subject,
      ])
    ).rows[0].n;

  it("disconnects a user's account only after a confirmation naming the user, disguising characters revealed", async () => {
    const connector = await connectedAccountsWorld();
    await signIn(services.adminToken);
    const disguised = 'ceo\u202E@corp\u200B';
    const { rows } = await services.runtime.pool.query<{ id: string }>(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed)
       VALUES (gen_random_uuid(), $1, $2, $3, 'active', '{read}', '\\x00') RETURNING id`,
      [connector, LINK_ISSUER, disguised],
    );
    const id = rows[0].id;
    await page.click('nav a[href="#/connections"]');
    const row = page.locator(`[data-testid=connections-table] tr[data-id="${id}"]`);
    await row.waitFor();
    // A double click on Disconnect opens the confirmation; its second click does not confirm.
    await row.locator('button:has-text("Disconnect")').dblclick();
    const confirm = row.locator('[data-testid=confirm-disconnect]');
    await confirm.waitFor();
    const text = (await confirm.locator('[data-testid=confirm-text]').textContent()) ?? '';
    expect(text).toContain('ceo⟨U+202E⟩@corp⟨U+200B⟩');
    expect(text).toContain(LINK_ISSUER);
    expect(text).toContain(connector);
    expect(text).not.toMatch(/[\u202E\u200B]/);
    await shot('connections-confirm');
    await page.waitForTimeout(300);
    expect((await services.runtime.pool.query('SELECT 1 FROM connected_accounts WHERE id = $1', [id])).rowCount).toBe(1);
    // Cancel changes nothing.
    await confirm.locator('button:has-text("Cancel")').click();
    await confirm.waitFor({ state: 'detached' });
    expect((await services.runtime.pool.query('SELECT 1 FROM connected_accounts WHERE id = $1', [id])).rowCount).toBe(1);
    await row.locator('button:has-text("Disconnect")').click();
    // The session ends as it is confirmed: the dialog asks for a token over the page, and the confirmation is still there after.
    await page.route('**/v1/connections/*', (route) =>
      route.request().method() === 'DELETE'
        ? route.fulfill({
            status: 401,
            headers: { 'content-type': 'application/json' },
            body: '{"error":"unauthorized","message":"the admin token has expired"}',
          })
        : route.fallback(),
    );
    await confirm.locator('button:has-text("Confirm disconnect")').click();
    await page.waitForSelector('[role=dialog] [data-testid=session-ended]');
    await page.unroute('**/v1/connections/*');
    await page.fill('[role=dialog] input[name=token]', services.adminToken);
    await page.click('[role=dialog] button[type=submit]');
    await page.locator('[role=dialog]').waitFor({ state: 'detached' });
    expect((await services.runtime.pool.query('SELECT 1 FROM connected_accounts WHERE id = $1', [id])).rowCount).toBe(1);
    await confirm.locator('button:has-text("Confirm disconnect")').click();
    await row.waitFor({ state: 'detached' });
    expect(await page.textContent('[data-testid=connections-notice]')).toContain('Disconnected ceo⟨U+202E⟩@corp⟨U+200B⟩');
    expect((await services.runtime.pool.query('SELECT 1 FROM connected_accounts WHERE id = $1', [id])).rowCount).toBe(0);
    await expectNoCspViolation();
  });

  it('creates one connect link on a double click or a retry, shows its URL once, and keeps it nowhere once dismissed', async () => {
    const connector = await connectedAccountsWorld();
    await signIn(services.adminToken);
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: services.adminUrl });
    const consoleLines: string[] = [];
    const onConsole = (message: { text: () => string }) => consoleLines.push(message.text());
    page.on('console', onConsole);
    const sent: Request[] = [];
    const onRequest = (request: Request) => {
      if (request.method() === 'POST' && new URL(request.url()).pathname === '/v1/connections/links') sent.push(request);
    };
    page.on('request', onRequest);
    await page.click('nav a[href="#/connections"]');
    const form = page.locator('[data-testid=connect-link-form]');
    await form.locator('input[name=connector_id]').fill(connector);
    await form.locator('input[name=link_user_iss]').fill(LINK_ISSUER);
    await form.locator('input[name=link_user_sub]').fill('alice\u202Eecila');
    // A double click on create opens one confirmation and sends nothing.
    await form.locator('button:has-text("Create connect link")').dblclick();
    const confirm = form.locator('[data-testid=confirm-link]');
    await confirm.waitFor();
    const text = (await confirm.locator('[data-testid=confirm-text]').textContent()) ?? '';
    expect(text).toContain('alice⟨U+202E⟩ecila');
    expect(text).toContain(LINK_ISSUER);
    expect(text).toContain(connector);
    expect(sent).toHaveLength(0);
    // A double click on Confirm: one link.
    await confirm.locator('button:has-text("Confirm")').dblclick();
    const url = await form.locator('[data-testid=connect-link-url]').inputValue();
    expect(url.startsWith(`${services.issuer}/connect/`)).toBe(true);
    expect(await linksFor('alice\u202Eecila')).toBe(1);
    expect(sent.length).toBeGreaterThan(0);
    expect(new Set(sent.map((request) => request.headers()['idempotency-key']))).toEqual(new Set([expect.stringMatching(/^[0-9a-f]{32}$/)]));
    await form.locator('button:has-text("Copy")').click();
    expect(await page.evaluate<string>('navigator.clipboard.readText()')).toBe(url);
    await page.evaluate<void>('navigator.clipboard.writeText("")');
    await form.locator('button:has-text("Done")').click();
    await form.locator('[data-testid=created-link]').waitFor({ state: 'detached' });
    const secret = url.slice(url.lastIndexOf('/') + 1);
    const everywhere = await page.evaluate<string>(
      `JSON.stringify({ html: document.documentElement.outerHTML, values: [...document.querySelectorAll('input, textarea, select')].map((e) => e.value),
        href: location.href, title: document.title, local: { ...localStorage }, session: { ...sessionStorage } })`,
    );
    expect(everywhere).not.toContain(secret);
    expect(consoleLines.join('\n')).not.toContain(secret);

    // A create refused by an outage keeps its confirmation, says when to try again, and the retry sends the same key.
    const before = sent.length;
    await form.locator('input[name=link_user_sub]').fill('bob');
    await form.locator('button:has-text("Create connect link")').click();
    await page.route('**/v1/connections/links', (route) =>
      route.fulfill({ status: 503, headers: { 'retry-after': '7', 'content-type': 'application/json' }, body: '{"message":"the database is unavailable"}' }),
    );
    await confirm.locator('button:has-text("Confirm")').click();
    await confirm.locator('[role=alert]:has-text("try again in 7 s")').waitFor();
    await page.unroute('**/v1/connections/links');
    // The first answer lost on its way back: the link was made, the page saw a failure.
    await page.route('**/v1/connections/links', async (route) => {
      await route.fetch();
      await route.abort('failed');
    });
    await confirm.locator('button:has-text("Confirm")').click();
    await confirm.locator('[role=alert]:has-text("cannot be reached")').waitFor();
    await page.unroute('**/v1/connections/links');
    expect(await linksFor('bob')).toBe(1);
    // The retry creates nothing more, and says the URL cannot be shown again.
    await confirm.locator('button:has-text("Confirm")').click();
    await form.locator('[data-testid=link-url-lost]').waitFor();
    expect(await linksFor('bob')).toBe(1);
    const keys = sent.slice(before).map((request) => request.headers()['idempotency-key']);
    expect(keys).toHaveLength(3);
    expect(new Set(keys).size).toBe(1);
    expect(keys[0]).not.toBe(sent[0].headers()['idempotency-key']);
    page.off('console', onConsole);
    page.off('request', onRequest);
    await expectNoCspViolation();
  });

  it('registers an identity provider once on a double click, and removes it, each after a confirmation naming it', async () => {
    await signIn(services.adminToken);
    await page.click('nav a[href="#/connections"]');
    const issuer = 'https://sso.console-register.example';
    const form = page.locator('[data-testid=provider-form]');
    // A field the API refuses is shown beside its field.
    await form.locator('input[name=issuer]').fill(issuer);
    await form.locator('input[name=jwks_uri]').fill('http://169.254.169.254/jwks');
    await form.locator('input[name=audience]').fill('writ-\u2066console');
    await form.locator('input[name=asserting_orchestrators]').fill('orch-1');
    await form.locator('button:has-text("Register provider")').click();
    const confirm = form.locator('[data-testid=confirm-provider]');
    const text = (await confirm.locator('[data-testid=confirm-text]').textContent()) ?? '';
    expect(text).toContain(issuer);
    expect(text).toContain('http://169.254.169.254/jwks');
    expect(text).toContain('writ-⟨U+2066⟩console');
    expect(text).toContain('Orchestrators orch-1 may also name any user');
    await confirm.locator('button:has-text("Confirm")').click();
    await form.locator('[data-field=jwks_uri] [data-field-error=jwks_uri]').waitFor();
    await confirm.locator('button:has-text("Cancel")').click();
    await form.locator('input[name=jwks_uri]').fill('http://127.0.0.1:9/jwks');
    await form.locator('input[name=audience]').fill('writ-console');
    await form.locator('button:has-text("Register provider")').click();
    const keys: string[] = [];
    const onRequest = (request: Request) => {
      if (request.method() === 'POST' && new URL(request.url()).pathname === '/v1/identity-providers') keys.push(request.headers()['idempotency-key']);
    };
    page.on('request', onRequest);
    // The first answer is lost on its way back: the provider is registered, the page saw a failure.
    await page.route('**/v1/identity-providers', async (route) => {
      await route.fetch();
      await route.abort('failed');
    });
    await confirm.locator('button:has-text("Confirm")').click();
    await confirm.locator('[role=alert]:has-text("cannot be reached")').waitFor();
    await page.unroute('**/v1/identity-providers');
    expect((await services.runtime.pool.query('SELECT count(*)::int AS n FROM identity_providers WHERE issuer = $1', [issuer])).rows[0].n).toBe(1);
    // Sent again (with its key), and twice in one task, before any re-render: still one provider, and no 409 "already registered".
    await page.evaluate<void>(
      `(() => { const button = [...document.querySelectorAll('[data-testid=confirm-provider] button')].find((b) => b.textContent.startsWith('Confirm')); button.click(); button.click(); })()`,
    );
    await page.locator('[data-testid=connections-notice]:has-text("Registered the identity provider")').waitFor();
    await confirm.waitFor({ state: 'detached' });
    expect(await form.locator('[role=alert]').count()).toBe(0);
    expect((await services.runtime.pool.query('SELECT count(*)::int AS n FROM identity_providers WHERE issuer = $1', [issuer])).rows[0].n).toBe(1);
    expect(keys.length).toBeGreaterThan(1);
    expect(keys[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(new Set(keys).size).toBe(1);
    page.off('request', onRequest);
    const row = page.locator('[data-testid=identity-providers] tr', { hasText: issuer });
    await row.waitFor();
    await shot('connections');
    await row.locator('button:has-text("Remove")').click();
    const removal = row.locator('[data-testid=confirm-remove-provider]');
    expect(await removal.locator('[data-testid=confirm-text]').textContent()).toContain(`Stop trusting ${issuer}`);
    await removal.locator('button:has-text("Confirm remove")').click();
    await row.waitFor({ state: 'detached' });
    expect((await services.runtime.pool.query('SELECT 1 FROM identity_providers WHERE issuer = $1', [issuer])).rowCount).toBe(0);
    await expectNoCspViolation();
  });

  it('shows a viewer no action on connections, an operator no identity provider change, and the API refuses them alike', async () => {
    const connector = await connectedAccountsWorld();
    await services.runtime.pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed)
       VALUES (gen_random_uuid(), $1, $2, 'carol', 'active', '{read}', '\\x00')`,
      [connector, LINK_ISSUER],
    );
    const viewer = await sendJson(
      'POST',
      `${services.adminUrl}/v1/admin-tokens`,
      { name: 'connections-viewer', role: 'viewer', expires_in: 3600 },
      services.adminToken,
    );
    const operator = await sendJson(
      'POST',
      `${services.adminUrl}/v1/admin-tokens`,
      { name: 'connections-operator', role: 'operator', expires_in: 3600 },
      services.adminToken,
    );
    const actions = 'button:has-text("Disconnect"), button:has-text("Remove"), [data-testid=connect-link-form], [data-testid=provider-form]';
    await signIn(viewer.body.token);
    await page.click('nav a[href="#/connections"]');
    await page.locator('[data-testid=connections-table] tr', { hasText: 'carol' }).waitFor();
    await page.locator(`[data-testid=identity-providers] td:text-is("${LINK_ISSUER}")`).waitFor();
    expect(await page.locator(actions).count()).toBe(0);
    expect(await page.locator('[data-testid=connections-table] thead th').count()).toBe(7);
    const refused = await sendJson(
      'POST',
      `${services.adminUrl}/v1/connections/links`,
      { connector_id: connector, user: { iss: LINK_ISSUER, sub: 'carol' } },
      viewer.body.token,
    );
    expect(refused.status).toBe(403);
    await signIn(operator.body.token);
    await page.click('nav a[href="#/connections"]');
    await page.locator('[data-testid=connections-table] tr', { hasText: 'carol' }).locator('button:has-text("Disconnect")').waitFor();
    await page.locator('[data-testid=connect-link-form]').waitFor();
    await page.locator(`[data-testid=identity-providers] td:text-is("${LINK_ISSUER}")`).waitFor();
    expect(await page.locator('[data-testid=provider-form], [data-testid=identity-providers] button:has-text("Remove")').count()).toBe(0);
    const denied = await sendJson('DELETE', `${services.adminUrl}/v1/identity-providers/${encodeURIComponent(LINK_ISSUER)}`, undefined, operator.body.token);
    expect(denied.status).toBe(403);
    await services.runtime.pool.query(`DELETE FROM connected_accounts WHERE user_subject = 'carol'`);
    await signIn(services.adminToken);
  });

  it('says before a revocation is confirmed that the tokens the revoked one created go with it, and they do', async () => {
    const create = (name: string, by: string) => sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name, role: 'admin', expires_in: 3600 }, by);
    const parent = await create('tree-parent', services.adminToken);
    const child = await create('tree-child', parent.body.token);
    const grandchild = await create('tree-grandchild', child.body.token);
    expect([parent.status, child.status, grandchild.status]).toEqual([201, 201, 201]);
    await signIn(services.adminToken);
    await page.click('nav a[href="#/access"]');
    const rowOf = (id: string) => page.locator(`[data-testid=admin-tokens] tr[data-id="${id}"]`);
    await rowOf(grandchild.body.id).waitFor();
    await rowOf(child.body.id).locator('button:has-text("Revoke")').click();
    expect(await rowOf(child.body.id).locator('[data-testid=revokes-descendants]').textContent()).toBe(
      'Also revokes 1 token it created, directly or through others. ',
    );
    await rowOf(child.body.id).locator('button:has-text("Keep")').click();
    await rowOf(parent.body.id).locator('button:has-text("Revoke")').click();
    expect(await rowOf(parent.body.id).locator('[data-testid=revokes-descendants]').textContent()).toBe(
      'Also revokes 2 tokens it created, directly or through others. ',
    );
    await rowOf(parent.body.id).locator('button:has-text("Confirm revoke")').click();
    for (const token of [parent, child, grandchild]) await rowOf(token.body.id).locator(':text-is("revoked")').waitFor();
    // A token with nothing below it says nothing more.
    const lone = await create('tree-lone', services.adminToken);
    await rowOf(lone.body.id).locator('button:has-text("Revoke")').click();
    expect(await rowOf(lone.body.id).locator('[data-testid=revokes-descendants]').count()).toBe(0);
    await rowOf(lone.body.id).locator('button:has-text("Confirm revoke")').click();
    await rowOf(lone.body.id).locator(':text-is("revoked")').waitFor();
  });

  it('creates one admin token on a double click or a retry after a lost answer, never a second one nobody saw', async () => {
    await signIn(services.adminToken);
    await page.click('nav a[href="#/access"]');
    const form = page.locator('[data-testid=new-admin-token]');
    const count = async (name: string) =>
      (await services.runtime.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM admin_tokens WHERE name = $1', [name])).rows[0].n;
    await form.locator('input[name=name]').fill('double-clicked');
    await form.locator('button[type=submit]').dblclick();
    expect(await form.locator('[data-testid=created-token]').inputValue()).toMatch(/^writ_admin_/);
    await page.waitForTimeout(500);
    expect(await count('double-clicked')).toBe(1);
    await form.locator('button:has-text("Done")').click();
    await form.locator('input[name=name]').fill('answer-lost');
    await page.route('**/v1/admin-tokens', async (route) => {
      await route.fetch();
      await route.abort('failed');
    });
    await form.locator('button[type=submit]').click();
    await form.locator('[role=alert]:has-text("cannot be reached")').waitFor();
    await page.unroute('**/v1/admin-tokens');
    expect(await count('answer-lost')).toBe(1);
    await form.locator('button[type=submit]').click();
    await form.locator('[role=alert]:has-text("cannot be shown again")').waitFor();
    expect(await count('answer-lost')).toBe(1);
    expect(await form.locator('[data-testid=created-token]').count()).toBe(0);
    const { rows } = await services.runtime.pool.query<{ id: string }>(`SELECT id FROM admin_tokens WHERE name IN ('double-clicked', 'answer-lost')`);
    for (const { id } of rows) await sendJson('DELETE', `${services.adminUrl}/v1/admin-tokens/${id}`, undefined, services.adminToken);
  });

  it('registers one agent on a double click on Create, though each request would generate its own id', async () => {
    await signIn(services.adminToken);
    const { jwks } = (await sendJson('GET', `${services.adminUrl}/v1/agents/agent-1`, undefined, services.adminToken)).body;
    await page.click('nav a[href="#/registry"]');
    await page.click('a[href="#/registry/agents"]');
    await page.click('button:has-text("New agent")');
    const editor = page.locator('[data-testid=editor]');
    await editor.locator('input[name=name]').fill('Clicked twice');
    await editor.locator('textarea[name=jwks]').fill(JSON.stringify(jwks));
    await editor.locator('button[type=submit]').dblclick();
    await editor.waitFor({ state: 'detached' });
    await page.waitForTimeout(500);
    const { rows } = await services.runtime.pool.query<{ id: string }>(`SELECT id FROM agents WHERE name = 'Clicked twice'`);
    expect(rows).toHaveLength(1);
    await sendJson('DELETE', `${services.adminUrl}/v1/agents/${rows[0].id}`, undefined, services.adminToken);
  });
});
