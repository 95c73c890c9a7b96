import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

/** A running node-oidc-provider (see oidc-provider-server.mjs). */
export interface TestOidcProvider {
  issuer: string;
  upstreamSecret: string;
  appSecret: string;
  stats(): Promise<{
    refreshes: number;
    refreshFailures: number;
    revocations: number;
    codeExchanges: number;
    apiCalls: Array<string | null>;
    heldTokenRequests: number;
  }>;
  /** Holds the next token request (code exchange or refresh) until {@link releaseToken}. */
  holdToken(): Promise<void>;
  releaseToken(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the provider on loopback with `writCallback` registered as the upstream clients'
 * redirect URI; with `keysClientJwk`, also a client `writ-upstream-keys` that authenticates
 * with `private_key_jwt` (ES256) by that public key.
 */
export async function startOidcProvider(writCallback: string, keysClientJwk?: Record<string, unknown>): Promise<TestOidcProvider> {
  const upstreamSecret = 'upstream-client-secret-5f1d7e';
  const appSecret = 'orchestrator-app-secret-93ac2b';
  const child: ChildProcess = spawn(process.execPath, [join(__dirname, 'oidc-provider-server.mjs')], {
    env: { ...process.env, OIDC_TEST_CONFIG: JSON.stringify({ writCallback, upstreamSecret, appSecret, keysClientJwk }), NODE_ENV: 'test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += String(chunk)));
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`oidc-provider exited (${code}): ${stderr}`)));
  });
  const { port } = JSON.parse(line) as { port: number };
  const issuer = `http://127.0.0.1:${port}`;
  return {
    issuer,
    upstreamSecret,
    appSecret,
    stats: async () => (await fetch(`${issuer}/test/stats`)).json() as ReturnType<TestOidcProvider['stats']>,
    holdToken: async () => void (await fetch(`${issuer}/test/hold-token`)).body?.cancel(),
    releaseToken: async () => void (await fetch(`${issuer}/test/release-token`)).body?.cancel(),
    close: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** A browser's cookies, enough for the provider's interaction and Writ's connect cookie. */
export class CookieJar {
  private readonly cookies = new Map<string, string>();

  /** The `Cookie` header to send. */
  header(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  /** Stores the response's `Set-Cookie`s. */
  store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const index = pair.indexOf('=');
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      if (value === '' || /max-age=0|expires=thu, 01 jan 1970/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }
}

/**
 * A user's browser going through the provider: follows redirects from `startUrl` (continuing on
 * Writ's connect link page, as the person does), signs in as
 * `account` on the login page and consents, until the provider redirects to a URL starting
 * with `stopAt` (returned, not fetched).
 */
export async function loginAndConsent(startUrl: string, account: string, stopAt: string, jar: CookieJar): Promise<string> {
  let url = startUrl;
  let method = 'GET';
  let body: string | undefined;
  let origin: string | undefined;
  for (let hop = 0; hop < 20; hop += 1) {
    if (url.startsWith(stopAt)) return url;
    const response = await fetch(url, {
      method,
      redirect: 'manual',
      headers: {
        cookie: jar.header(),
        ...(body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...(origin ? { origin } : {}),
      },
      body,
    });
    origin = undefined;
    jar.store(response);
    if (response.status >= 300 && response.status < 400) {
      url = new URL(response.headers.get('location')!, url).href;
      method = 'GET';
      body = undefined;
      continue;
    }
    const page = await response.text();
    if (response.status !== 200) throw new Error(`unexpected ${response.status} at ${url}: ${page.slice(0, 300)}`);
    if (/<form method="post"><button type="submit">Continue to /.test(page)) {
      // Writ's connect link page: the person continues, from the page itself (its origin).
      method = 'POST';
      body = '';
      origin = new URL(url).origin;
      continue;
    }
    const action = /<form[^>]*action="([^"]+)"/.exec(page)?.[1];
    if (!action) throw new Error(`no form at ${url}: ${page.slice(0, 300)}`);
    const target = new URL(action.replace(/&amp;/g, '&'), url).href;
    if (/name="prompt" value="login"/.test(page)) body = new URLSearchParams({ prompt: 'login', login: account, password: 'any' }).toString();
    else if (/name="prompt" value="consent"/.test(page)) body = new URLSearchParams({ prompt: 'consent' }).toString();
    else throw new Error(`unknown interaction page at ${url}`);
    url = target;
    method = 'POST';
  }
  throw new Error('too many redirects');
}
