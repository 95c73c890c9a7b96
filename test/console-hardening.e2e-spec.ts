import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, Page } from 'playwright-core';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { describeWithBrowser, findChromium, launchChromium } from './support/browser';
import { createTask, exchangeFields, PAYOUT_ALLOWED, payoutUpTo, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { buildConsole } = require('../scripts/build-console.js') as { buildConsole: () => void };

/**
 * The console attacked from outside the main story (test/console.e2e-spec.ts): what a page whose
 * session ended sends, characters that Chromium draws as nothing, and a console left for another
 * page and brought back from the back/forward cache.
 */
describeWithBrowser('admin console hardening in Chromium', () => {
  jest.setTimeout(120_000);
  let services: TestServices;
  let world: World;
  let payments: MockUpstream;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    buildConsole();
    payments = await startPaymentsUpstream('sk_live_console_hardening_51ac');
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool, payments.url);
    await requireApprovalAbove(services, 10000);
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage();
  });

  afterAll(async () => {
    await browser?.close();
    await services?.close();
    await payments?.close();
  });

  const signIn = async (token: string) => {
    await page.goto(`${services.adminUrl}/console/`);
    await page.fill('input[name=token]', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=who]');
  };

  it('sends nothing without a token once the session has ended, so that its polls cannot lock the admin out', async () => {
    const created = await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'night-shift', role: 'operator' }, services.adminToken);
    expect(created.status).toBe(201);
    await signIn(created.body.token);
    await page.waitForSelector('[data-testid=tasks-table]');
    // Every request of the page to the admin API, with whether it carried a token.
    const tokenless: string[] = [];
    page.on('request', (request) => {
      if (new URL(request.url()).pathname.startsWith('/v1/') && !request.headers().authorization) tokenless.push(`${request.method()} ${request.url()}`);
    });
    // The token is revoked while the console is open: a poll gets 401 and the session ends.
    expect((await sendJson('DELETE', `${services.adminUrl}/v1/admin-tokens/${created.body.id}`, undefined, services.adminToken)).status).toBeLessThan(300);
    await page.waitForSelector('[role=dialog] [data-testid=session-ended]', { timeout: 10_000 });
    // The page under the dialog polls (live tasks, events, the approvals badge every 2 to 3 s):
    // without a token each poll would count as a failed authentication of this address, which
    // the throttle locks out after 20 a minute, the admin's next sign-in included.
    await page.waitForTimeout(7_000);
    expect(tokenless).toEqual([]);
    const failures = await services.runtime.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_events WHERE type = 'admin.authentication_failed' AND data->>'reason' = 'missing'`,
    );
    expect(Number(failures.rows[0].n)).toBe(0);
    // Signing in again works at once, and the page's polls carry the new token.
    await page.fill('[role=dialog] input[name=token]', services.adminToken);
    await page.click('[role=dialog] button[type=submit]');
    await page.locator('[role=dialog]').waitFor({ state: 'detached' });
    await page.waitForTimeout(2_500);
    expect(tokenless).toEqual([]);
    expect(await page.locator('[data-testid=tasks-table] >> xpath=.. >> [role=alert]').count()).toBe(0);
  });

  it('shows the interlinear annotation characters and the object replacement character, which Chromium draws as nothing', async () => {
    // U+FFF9 to U+FFFB are format characters but not default-ignorable; U+FFFC is a symbol. Each
    // is drawn with no width: `acct_1` with them reads as `acct_1`.
    const invisible = ['\uFFF9', '\uFFFA', '\uFFFB', '\uFFFC'];
    // Measured in the page (a string: this file is compiled without the DOM's types).
    const widths = await page.evaluate<number[]>(
      `(() => {
        const probe = document.body.appendChild(document.createElement('span'));
        probe.textContent = 'aa';
        const plain = probe.getBoundingClientRect().width;
        const measured = ${JSON.stringify(invisible)}.map((char) => {
          probe.textContent = 'a' + char + 'a';
          return probe.getBoundingClientRect().width - plain;
        });
        probe.remove();
        return measured;
      })()`,
    );
    for (const width of widths) expect(Math.abs(width)).toBeLessThan(0.5);
    await signIn(services.adminToken);
    const destination = `acct_${invisible.join('')}1`;
    const allowed = [{ ...PAYOUT_ALLOWED[0], constraints: { ...PAYOUT_ALLOWED[0].constraints, destination } }];
    const task = await createTask(services, world.orchestrator, { purpose: `pay invoice INV-${invisible.join('')}77 to Acme`, allowed });
    const details = [{ ...payoutUpTo(42000)[0], constraints: { ...payoutUpTo(42000)[0].constraints, destination } }];
    const approvalId: string = (await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, details))).body.approval_id;
    expect(approvalId).toEqual(expect.any(String));
    await page.click('nav a[href="#/tasks"]');
    const row = page.locator(`tr[data-task-id="${task.task_id}"]`);
    await row.waitFor();
    expect(await row.locator('.purpose').textContent()).toBe('pay invoice INV-⟨U+FFF9⟩⟨U+FFFA⟩⟨U+FFFB⟩⟨U+FFFC⟩77 to Acme');
    expect(await row.locator('.details').textContent()).toContain('destination="acct_\\ufff9\\ufffa\\ufffb\\ufffc1"');
    await page.click('nav a[href="#/approvals"]');
    const card = page.locator(`article[data-approval-id="${approvalId}"]`);
    await card.locator('[data-testid=purpose]:has-text("INV-")').waitFor();
    expect(await card.locator('[data-testid=purpose]').textContent()).toBe('pay invoice INV-⟨U+FFF9⟩⟨U+FFFA⟩⟨U+FFFB⟩⟨U+FFFC⟩77 to Acme');
    expect(await card.locator('pre.json').textContent()).toContain('"destination": "acct_\\ufff9\\ufffa\\ufffb\\ufffc1"');
    const text = (await card.textContent())!;
    for (const char of invisible) expect(text).not.toContain(char);
    await sendJson('POST', `${services.adminUrl}/v1/approvals/${approvalId}/deny`, {}, services.adminToken);
    await sendJson('POST', `${services.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, services.adminToken);
  });

  it('signs out when the page is left, so that Back cannot bring the console back signed in from the back/forward cache', async () => {
    // Playwright turns the back/forward cache off; a browser as admins run it has it on.
    const { chromium } = await import('playwright-core');
    const cached = await chromium.launch({
      executablePath: findChromium(),
      headless: true,
      ignoreDefaultArgs: ['--disable-back-forward-cache'],
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    const elsewhere = createServer((_request, response) => response.end('<!doctype html><title>elsewhere</title><p>elsewhere</p>'));
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    try {
      const tab = await (await cached.newContext()).newPage();
      await tab.goto(`${services.adminUrl}/console/`);
      await tab.fill('input[name=token]', services.adminToken);
      await tab.click('button[type=submit]');
      await tab.waitForSelector('[data-testid=tasks-table]');
      await tab.evaluate('window.__kept = true');
      // The admin goes on to another site in the same tab, then someone presses Back.
      await tab.goto(`http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}/`);
      const sentWithToken: string[] = [];
      tab.on('request', (request) => {
        if (request.headers().authorization) sentWithToken.push(request.url());
      });
      await tab.goBack({ waitUntil: 'commit' });
      await tab.waitForSelector('input[name=token]');
      // The page came back from the cache (its memory with it), not from a fresh load.
      expect(await tab.evaluate('window.__kept')).toBe(true);
      expect(await tab.locator('[data-testid=who]').count()).toBe(0);
      expect(await tab.locator('[data-testid=tasks-table]').count()).toBe(0);
      await tab.waitForTimeout(3_000);
      expect(sentWithToken).toEqual([]);
    } finally {
      await cached.close();
      elsewhere.close();
    }
  });
});
