import type { Browser, Page } from 'playwright-core';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { describeWithBrowser, launchChromium } from './support/browser';
import { http } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/** The headers the console gets (apps/admin/src/console/console-static.ts), which the OpenAPI page must get too. */
const SECURITY_HEADERS = {
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=(), usb=()',
  'x-content-type-options': 'nosniff',
};

/**
 * The OpenAPI page (`/docs`) runs only its own files: a Content-Security-Policy as strict as the
 * console's (no inline script or style, nothing from another origin, never framed) and the
 * console's other security headers, on the page and on every file of it. In Chromium, the page
 * still renders the whole API under that policy, with no violation and no request elsewhere.
 */
describe('admin OpenAPI page: strict headers', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
  });
  afterAll(() => services.close());

  it('serves the page and its files under a strict CSP and the console security headers', async () => {
    const paths = [
      '/docs',
      '/docs/',
      '/docs/index.html',
      '/docs/swagger-ui-init.js',
      '/docs/docs-page.css',
      '/docs/swagger-ui-bundle.js',
      '/docs/swagger-ui.css',
    ];
    for (const path of paths) {
      const response = await http(`${services.adminUrl}${path}`);
      expect([path, response.status]).toEqual([path, 200]);
      const csp = response.headers.get('content-security-policy') ?? '';
      expect([path, csp]).toEqual([path, expect.stringContaining("default-src 'none'")]);
      for (const directive of [
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "connect-src 'self'",
      ])
        expect([path, csp]).toEqual([path, expect.stringContaining(directive)]);
      expect([path, csp]).not.toEqual([path, expect.stringMatching(/unsafe-|\*|https?:/)]);
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) expect([path, name, response.headers.get(name)]).toEqual([path, name, value]);
    }
  });

  it('has no inline script or style in the page, and loads only files of this origin', async () => {
    for (const path of ['/docs', '/docs/']) {
      const html = (await http(`${services.adminUrl}${path}`)).text;
      expect(html).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/i);
      expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=|javascript:/i);
      expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
      // Every file the page names is served (relative to the page, with or without its trailing slash).
      for (const [, file] of html.matchAll(/(?:src|href)="([^"]+)"/g)) {
        const url = new URL(file, `${services.adminUrl}${path}`);
        expect([path, file, (await http(url.href)).status]).toEqual([path, file, 200]);
      }
    }
  });

  it('serves nothing else of Swagger UI (no OAuth redirect page with inline script, no source maps)', async () => {
    for (const path of [
      '/docs/oauth2-redirect.html',
      '/docs/swagger-initializer.js',
      '/docs/swagger-ui-bundle.js.map',
      '/docs/package.json',
      '/docs/../package.json',
    ])
      expect([path, (await http(`${services.adminUrl}${path}`)).status]).toEqual([path, 404]);
    // The document is still served beside the page.
    expect((await http(`${services.adminUrl}/docs-json`)).body.info.title).toBe('Writ admin API');
    expect((await http(`${services.adminUrl}/docs-yaml`)).status).toBe(200);
  });
});

describeWithBrowser('admin OpenAPI page in Chromium under its CSP', () => {
  jest.setTimeout(120_000);
  let services: TestServices;
  let browser: Browser;
  let page: Page;
  const violations: string[] = [];
  const foreign: string[] = [];

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    browser = await launchChromium();
    page = await (await browser.newContext()).newPage();
    // Every CSP violation the page sees is kept (an init script runs outside the page's CSP).
    await page.addInitScript({
      content:
        "document.addEventListener('securitypolicyviolation', (e) => { (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });",
    });
    page.on('console', (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) violations.push(message.text());
    });
    page.on('request', (request) => {
      if (!request.url().startsWith(services.adminUrl) && !request.url().startsWith('data:')) foreign.push(request.url());
    });
  });
  afterAll(async () => {
    await browser?.close();
    await services?.close();
  });

  for (const path of ['/docs', '/docs/']) {
    it(`renders every operation at ${path} with no CSP violation`, async () => {
      await page.goto(`${services.adminUrl}${path}`);
      await page.waitForSelector('.swagger-ui .info .title');
      expect(await page.textContent('.swagger-ui .info .title')).toContain('Writ admin API');
      await page.waitForSelector('.opblock-tag-section');
      expect(await page.locator('.opblock').count()).toBeGreaterThan(40);
      await page.click('#operations-connections-AdminConnectionsController_list .opblock-summary-control');
      await page.waitForSelector('#operations-connections-AdminConnectionsController_list .parameters');
      expect(await page.textContent('#operations-connections-AdminConnectionsController_list .parameters')).toContain('cursor');
      if (path === '/docs') {
        // "Try it out" with an admin token: the call goes to this origin, under the page's CSP.
        await page.click('.btn.authorize');
        await page.fill('.auth-container input', services.adminToken);
        await page.click('.auth-btn-wrapper .btn.authorize');
        await page.click('.btn-done');
        const operation = page.locator('#operations-connections-AdminConnectionsController_list');
        await operation.locator('.try-out__btn').click();
        await operation.locator('.execute').click();
        await operation.locator('.live-responses-table tbody .response-col_status').first().waitFor();
        expect((await operation.locator('.live-responses-table tbody .response-col_status').first().textContent())?.trim()).toBe('200');
        expect(await operation.locator('.live-responses-table .microlight').first().textContent()).toContain('next_cursor');
      }
      expect(await page.evaluate<string[]>('window.__csp || []')).toEqual([]);
      expect(violations).toEqual([]);
      expect(foreign).toEqual([]);
    });
  }

  it('enforces the policy: a script injected into the page does not run', async () => {
    await page.goto(`${services.adminUrl}/docs`);
    await page.waitForSelector('.swagger-ui .info .title');
    await page.evaluate(`document.body.appendChild(Object.assign(document.createElement('script'), { textContent: 'window.__injected = 1' }))`);
    expect(await page.evaluate<unknown>('window.__injected')).toBeUndefined();
    expect(await page.evaluate<string[]>('window.__csp || []')).toEqual([expect.stringMatching(/^script-src-elem inline/)]);
  });
});
