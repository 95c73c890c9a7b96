import type { Browser, Page } from 'playwright-core';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { describeWithBrowser, launchChromium } from './support/browser';
import { requireApprovalAbove, seedWorld } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { sendJson } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { buildConsole } = require('../scripts/build-console.js') as { buildConsole: () => void };

/**
 * The console attacked from outside the main story (test/console.e2e-spec.ts): what a page whose
 * session ended sends.
 */
describeWithBrowser('admin console hardening in Chromium', () => {
  jest.setTimeout(120_000);
  let services: TestServices;
  let payments: MockUpstream;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    buildConsole();
    payments = await startPaymentsUpstream('sk_live_console_hardening_51ac');
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    await seedWorld(services.runtime.pool, payments.url);
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
});
