// A real OAuth 2.0 / OpenID Connect provider (node-oidc-provider) for the connected-accounts
// suites, run as a child process (the package is ESM-only). It is both the upstream a
// connector connects users to and the users' identity provider. Beside the provider it
// serves a protected API (/api/me answers the account of the presented access token) and a
// few test-only counters (/test/stats). It prints {"port": N} on its first line.
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;
const stats = { refreshes: 0, refreshFailures: 0, revocations: 0, codeExchanges: 0, apiCalls: [], heldTokenRequests: 0 };
// /test/hold-token arms a hold on the next POST /token (a code exchange or a refresh): it waits
// until /test/release-token, for tests that act while Writ waits for the provider.
let holdNextToken = false;
const heldTokenRequests = [];

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'writ-upstream',
      client_secret: config.upstreamSecret,
      redirect_uris: [config.writCallback],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ...(config.keysClientJwk
      ? [
          {
            client_id: 'writ-upstream-keys',
            redirect_uris: [config.writCallback],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'private_key_jwt',
            token_endpoint_auth_signing_alg: 'ES256',
            jwks: { keys: [config.keysClientJwk] },
          },
        ]
      : []),
    {
      client_id: 'orchestrator-app',
      client_secret: config.appSecret,
      redirect_uris: ['http://127.0.0.1:9/cb'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  scopes: ['openid', 'offline_access', 'repo:read'],
  features: { revocation: { enabled: true }, devInteractions: { enabled: true } },
  pkce: { required: () => true },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  cookies: { keys: ['writ-test-cookie-key-0123456789'] },
  ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Grant: 3600, Interaction: 600, Session: 3600, RefreshToken: 3600 },
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.method === 'POST') {
    const grantType = ctx.oidc?.params?.grant_type;
    if (grantType === 'refresh_token') ctx.status === 200 ? (stats.refreshes += 1) : (stats.refreshFailures += 1);
    if (grantType === 'authorization_code' && ctx.status === 200) stats.codeExchanges += 1;
  }
  if (ctx.path === '/token/revocation' && ctx.method === 'POST' && ctx.status === 200) stats.revocations += 1;
});

const callback = provider.callback();
server.on('request', async (req, res) => {
  if (req.url === '/test/stats') {
    res.setHeader('content-type', 'application/json');
    return res.end(JSON.stringify(stats));
  }
  if (req.url === '/test/hold-token') {
    holdNextToken = true;
    res.statusCode = 204;
    return res.end();
  }
  if (req.url === '/test/release-token') {
    for (const resume of heldTokenRequests.splice(0)) resume();
    res.statusCode = 204;
    return res.end();
  }
  if (req.url === '/token' && req.method === 'POST' && holdNextToken) {
    holdNextToken = false;
    stats.heldTokenRequests += 1;
    await new Promise((resolve) => heldTokenRequests.push(resolve));
  }
  if (req.url.startsWith('/test/drop-access-token?')) {
    // The provider forgets one access token (as after a password change): the API answers 401 to it.
    const token = new URL(req.url, issuer).searchParams.get('token');
    const found = token ? await provider.AccessToken.find(token) : undefined;
    if (found) await found.destroy();
    res.statusCode = found ? 204 : 404;
    return res.end();
  }
  if (req.url.startsWith('/api/me')) {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const found = token ? await provider.AccessToken.find(token) : undefined;
    stats.apiCalls.push(found ? found.accountId : null);
    res.setHeader('content-type', 'application/json');
    // A careless upstream that echoes the caller's token, in a header and in the body (the gateway must not pass it on).
    if (req.url.includes('echo=1') && token) res.setHeader('x-echo-token', token);
    if (!found || found.isExpired) {
      res.statusCode = 401;
      return res.end(JSON.stringify({ error: 'invalid_token' }));
    }
    const echo = req.url.includes('echo=1') ? { seen_authorization: req.headers.authorization } : {};
    return res.end(JSON.stringify({ account: found.accountId, scope: found.scope, ...echo }));
  }
  callback(req, res);
});

process.stdout.write(`${JSON.stringify({ port })}\n`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
