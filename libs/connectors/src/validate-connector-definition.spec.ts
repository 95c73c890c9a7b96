import { validateConnectorDefinition, validateConnectorPatch } from './validate-connector-definition';

const payments = () => ({
  id: 'payments',
  name: 'Payments',
  base_url: 'https://api.payments.example',
  credential: { type: 'bearer', token: 'sk_live_secret_value' },
  operations: [
    {
      name: 'payouts.create',
      method: 'POST',
      path: '/v1/payouts',
      risk: 'write',
      constraints: {
        destination: { in: 'body', field: 'destination', op: 'eq' },
        amount_max: { in: 'body', field: 'amount', op: 'lte' },
        currency: { in: 'body', field: 'currency', op: 'eq' },
      },
    },
    {
      name: 'repo.issues.list',
      method: 'GET',
      path: '/repos/{owner}/{repo}/issues',
      risk: 'read',
      constraints: { repo: { in: 'path', field: 'repo', op: 'eq' } },
    },
  ] as Array<Record<string, unknown>>,
});

function fieldsOf(input: unknown): string[] {
  const outcome = validateConnectorDefinition(input);
  if (outcome.ok) return [];
  return outcome.errors.map((error) => error.field);
}

describe('validateConnectorDefinition', () => {
  it('accepts the contract example and normalises missing constraints to {}', () => {
    const input = payments();
    input.operations.push({ name: 'ping', method: 'HEAD', path: '/', risk: 'read' });
    const outcome = validateConnectorDefinition(input);
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(outcome.value.operations[2]).toEqual({ name: 'ping', method: 'HEAD', path: '/', risk: 'read', constraints: {} });
    expect(outcome.value.credential).toEqual({ type: 'bearer', token: 'sk_live_secret_value' });
  });

  it('accepts a definition without a credential', () => {
    const { credential: _credential, ...rest } = payments();
    expect(validateConnectorDefinition(rest)).toMatchObject({ ok: true, value: { id: 'payments' } });
  });

  it.each([
    ['an id with capitals', { id: 'Payments' }, 'id'],
    ['an id with a slash', { id: 'pay/ments' }, 'id'],
    ['an empty name', { name: '  ' }, 'name'],
    ['a relative base_url', { base_url: '/api' }, 'base_url'],
    ['a non-http base_url', { base_url: 'ftp://files.example' }, 'base_url'],
    ['userinfo in base_url', { base_url: 'https://user:pw@api.example' }, 'base_url'],
    ['an empty userinfo in base_url', { base_url: 'https://@api.example' }, 'base_url'],
    ['a query in base_url', { base_url: 'https://api.example/?x=1' }, 'base_url'],
    ['a fragment in base_url', { base_url: 'https://api.example/#top' }, 'base_url'],
    ['an empty catalogue', { operations: [] }, 'operations'],
    ['an unknown top-level member', { owner: 'me' }, 'owner'],
  ])('refuses %s', (_name, change, field) => {
    expect(fieldsOf({ ...payments(), ...change })).toEqual([field]);
  });

  // What an admin reads back must be where the gateway sends: the URL parser rewrites these.
  it.each([
    ['a homoglyph host (Cyrillic ра)', 'https://раypal.example/', 'must be ASCII (an internationalised host in its xn-- form: xn--ypal-43d9g.example)'],
    ['a full-width dot', 'https://api\uff0epayments.example', 'must be ASCII (an internationalised host in its xn-- form: api.payments.example)'],
    ['a hexadecimal IPv4 host', 'http://0x7f.1:8080/', 'must name its host as it is reached (127.0.0.1:8080)'],
    ['an IPv6 host not in its short form', 'http://[0:0::1]/', 'must name its host as it is reached ([::1])'],
    ['encoded dot segments', 'https://api.example/v1/%2e%2e/admin/', 'must have its path in normal form (no dot segments, encoded dots or backslashes)'],
    ['a backslash', 'https://api.example\\admin', 'must have its path in normal form (no dot segments, encoded dots or backslashes)'],
  ])('refuses a base_url with %s, saying where it would go', (_name, base_url, message) => {
    const outcome = validateConnectorDefinition({ ...payments(), base_url });
    expect(outcome).toMatchObject({ ok: false, errors: [{ field: 'base_url', message }] });
  });

  it.each(['https://API.Payments.example', 'https://api.payments.example:443/v1', 'http://127.0.0.1:9/', 'https://xn--ypal-43d9g.example/api'])(
    'accepts the base_url %s (case and default ports aside, written as it is reached)',
    (base_url) => {
      expect(validateConnectorDefinition({ ...payments(), base_url })).toMatchObject({ ok: true });
    },
  );

  const withOperation = (index: number, change: Record<string, unknown>) => {
    const input = payments();
    input.operations[index] = { ...input.operations[index], ...change };
    return input;
  };

  it.each([
    ['an unknown method', 0, { method: 'TRACE' }, 'operations[0].method'],
    ['a lowercase method', 0, { method: 'post' }, 'operations[0].method'],
    ['an unknown risk', 0, { risk: 'admin' }, 'operations[0].risk'],
    ['a bad operation name', 0, { name: 'pay outs' }, 'operations[0].name'],
    ['a path with ..', 0, { path: '/v1/../admin' }, 'operations[0].path'],
    ['a path without a leading slash', 0, { path: 'v1/payouts' }, 'operations[0].path'],
    ['a path with a query', 0, { path: '/v1/payouts?x=1' }, 'operations[0].path'],
    ['an unknown operation member', 0, { scopes: ['x'] }, 'operations[0].scopes'],
    ['constraints that are not an object', 0, { constraints: [] }, 'operations[0].constraints'],
  ])('refuses %s', (_name, index, change, field) => {
    expect(fieldsOf(withOperation(index, change))).toEqual([field]);
  });

  const withConstraint = (index: number, name: string, binding: unknown) => {
    const input = payments();
    const operation = input.operations[index] as { constraints: Record<string, unknown> };
    operation.constraints = { ...operation.constraints, [name]: binding };
    return input;
  };

  it.each([
    ['an unknown operator', 0, 'amount', { in: 'body', field: 'amount', op: 'regex' }, 'operations[0].constraints.amount.op'],
    ['an unknown location', 0, 'amount', { in: 'cookie', field: 'amount', op: 'eq' }, 'operations[0].constraints.amount.in'],
    [
      'a header constraint on a name that is not a token',
      0,
      'account',
      { in: 'header', field: 'Stripe:Account', op: 'eq' },
      'operations[0].constraints.account.field',
    ],
    ['a header constraint on Authorization', 0, 'auth', { in: 'header', field: 'authorization', op: 'eq' }, 'operations[0].constraints.auth.field'],
    ['a header constraint on Host', 0, 'host', { in: 'header', field: 'Host', op: 'eq' }, 'operations[0].constraints.host.field'],
    ['a header constraint on X-Forwarded-For', 0, 'ip', { in: 'header', field: 'X_Forwarded_For', op: 'eq' }, 'operations[0].constraints.ip.field'],
    ['a header constraint on Content-Type', 0, 'type', { in: 'header', field: 'Content-Type', op: 'eq' }, 'operations[0].constraints.type.field'],
    ['a header constraint on Accept-Encoding', 0, 'enc', { in: 'header', field: 'accept-encoding', op: 'eq' }, 'operations[0].constraints.enc.field'],
    ['a header constraint on Connection', 0, 'conn', { in: 'header', field: 'Connection', op: 'eq' }, 'operations[0].constraints.conn.field'],
    ['a header constraint on traceparent', 0, 'trace', { in: 'header', field: 'traceparent', op: 'eq' }, 'operations[0].constraints.trace.field'],
    ['a field with spaces', 0, 'amount', { in: 'body', field: 'the amount', op: 'eq' }, 'operations[0].constraints.amount.field'],
    ['a field with an empty segment', 0, 'amount', { in: 'body', field: 'a..b', op: 'eq' }, 'operations[0].constraints.amount.field'],
    ['a __proto__ field segment', 0, 'amount', { in: 'body', field: 'a.__proto__', op: 'eq' }, 'operations[0].constraints.amount.field'],
    ['an unknown constraint member', 0, 'amount', { in: 'body', field: 'amount', op: 'eq', strict: true }, 'operations[0].constraints.amount.strict'],
    ['a constraint that is not an object', 0, 'amount', 'body.amount', 'operations[0].constraints.amount'],
    ['a bad constraint name', 0, 'bad name', { in: 'body', field: 'amount', op: 'eq' }, 'operations[0].constraints.bad name'],
    ['a path constraint on a missing parameter', 1, 'owner2', { in: 'path', field: 'org', op: 'eq' }, 'operations[1].constraints.owner2.field'],
    ['a body constraint on GET', 1, 'state', { in: 'body', field: 'state', op: 'eq' }, 'operations[1].constraints.state.in'],
  ])('refuses %s', (_name, index, constraint, binding, field) => {
    expect(fieldsOf(withConstraint(index, constraint, binding))).toEqual([field]);
  });

  it('refuses body constraints on HEAD and DELETE too, and path constraints when the template has no parameters', () => {
    const input = payments();
    input.operations.push(
      { name: 'a', method: 'DELETE', path: '/x/{id}', risk: 'write', constraints: { id: { in: 'body', field: 'id', op: 'eq' } } },
      { name: 'b', method: 'HEAD', path: '/y', risk: 'read', constraints: { q: { in: 'body', field: 'q', op: 'eq' } } },
      { name: 'c', method: 'POST', path: '/z', risk: 'write', constraints: { p: { in: 'path', field: 'p', op: 'eq' } } },
    );
    expect(fieldsOf(input)).toEqual(['operations[2].constraints.id.in', 'operations[3].constraints.q.in', 'operations[4].constraints.p.field']);
  });

  it('refuses duplicate names and two operations on one method and path (whatever the parameter names)', () => {
    const input = payments();
    input.operations.push(
      { name: 'payouts.create', method: 'PUT', path: '/v2/payouts', risk: 'write' },
      { name: 'issues.other', method: 'GET', path: '/repos/{org}/{name}/issues', risk: 'read' },
    );
    const outcome = validateConnectorDefinition(input);
    expect(outcome.ok).toBe(false);
    if (outcome.ok) return;
    expect(outcome.errors).toEqual([
      { field: 'operations[2].name', message: 'duplicates operations[0].name' },
      { field: 'operations[3].path', message: 'operations[1] already has the same method and path' },
    ]);
  });

  it('accepts overlapping templates when one is more specific, in either order (literals win over parameters)', () => {
    const exportOp = { name: 'items.export', method: 'GET', path: '/items/export', risk: 'write' };
    const getOp = { name: 'items.get', method: 'GET', path: '/items/{id}', risk: 'read' };
    const nested = [
      { name: 'a.general', method: 'GET', path: '/a/{x}/{y}', risk: 'read' },
      { name: 'a.middle', method: 'GET', path: '/a/b/{y}', risk: 'read' },
      { name: 'a.exact', method: 'GET', path: '/a/b/c', risk: 'read' },
    ];
    for (const operations of [[exportOp, getOp], [getOp, exportOp], nested, [...nested].reverse()]) {
      expect(validateConnectorDefinition({ ...payments(), operations })).toMatchObject({ ok: true });
      expect(validateConnectorPatch({ operations })).toMatchObject({ ok: true });
    }
  });

  it('refuses two templates on one method that a path matches with neither more specific, in either order, on create and update', () => {
    const x = { name: 'a.x', method: 'GET', path: '/a/{x}/c', risk: 'read' };
    const y = { name: 'a.y', method: 'GET', path: '/a/b/{y}', risk: 'write' };
    const other = { name: 'a.post', method: 'POST', path: '/a/b/{y}', risk: 'write' };
    expect(validateConnectorDefinition({ ...payments(), operations: [x, y, other] })).toEqual({
      ok: false,
      errors: [{ field: 'operations[1].path', message: 'overlaps operations[0].path (/a/{x}/c) with neither more specific: GET /a/b/c would match both' }],
    });
    expect(validateConnectorPatch({ operations: [other, y, x] })).toEqual({
      ok: false,
      errors: [{ field: 'operations[2].path', message: 'overlaps operations[1].path (/a/b/{y}) with neither more specific: GET /a/b/c would match both' }],
    });
    // Another method, another segment count, or a literal that tells them apart: no overlap.
    const apart = [x, { ...y, path: '/a/b/{y}/d' }, { ...other, path: '/a/b/c' }, { name: 'a.z', method: 'GET', path: '/a/b/d', risk: 'read' }];
    expect(validateConnectorDefinition({ ...payments(), operations: apart })).toMatchObject({ ok: true });
  });

  it('refuses HTTP operation names that differ only in case (one action to a task, a grant or policy data)', () => {
    const input = payments();
    input.operations.push({ name: 'Payouts.Create', method: 'POST', path: '/v2/payouts', risk: 'read' });
    expect(validateConnectorDefinition(input)).toMatchObject({
      ok: false,
      errors: [{ field: 'operations[2].name', message: 'duplicates operations[0].name (ignoring case)' }],
    });
  });

  describe('names the gateway would find in two places (field_in_two_places)', () => {
    const operation = (path: string, constraints: Record<string, unknown>) => {
      const input = payments();
      input.operations = [{ name: 'op', method: 'POST', path, risk: 'write', constraints }];
      return input;
    };

    it.each([
      ['a query field named as a path parameter', '/repos/{repo}', { repo: { in: 'query', field: 'repo', op: 'eq' } }, 'operations[0].constraints.repo.in'],
      ['a body field named as a path parameter', '/repos/{repo}', { r: { in: 'body', field: 'repo', op: 'eq' } }, 'operations[0].constraints.r.in'],
      [
        'a query field named as a path parameter in another case',
        '/repos/{repo}',
        { r: { in: 'query', field: 'Repo', op: 'eq' } },
        'operations[0].constraints.r.in',
      ],
      [
        'a query field a framework reads as a path parameter (. as _)',
        '/x/{re_po}',
        { r: { in: 'query', field: 're.po', op: 'eq' } },
        'operations[0].constraints.r.in',
      ],
      [
        'a dotted body field whose top-level member is a path parameter',
        '/repos/{repo}',
        { r: { in: 'body', field: 'REPO.name', op: 'eq' } },
        'operations[0].constraints.r.in',
      ],
      ['path parameters that differ only in case', '/repos/{Repo}/{repo}', {}, 'operations[0].path'],
      [
        'path parameters that differ only in case, one of them bound',
        '/a/{owner}/{OWNER}',
        { o: { in: 'path', field: 'owner', op: 'eq' } },
        'operations[0].path',
      ],
    ])('refuses %s', (_name, path, constraints, field) => {
      expect(fieldsOf(operation(path, constraints))).toEqual([field]);
    });

    it('says which parameter the field meets, and refuses the same in a change', () => {
      expect(validateConnectorDefinition(operation('/repos/{owner}/{repo}', { repo: { in: 'query', field: 'repo', op: 'eq' } }))).toEqual({
        ok: false,
        errors: [
          {
            field: 'operations[0].constraints.repo.in',
            message:
              'query field repo is also the path parameter {repo} (names compared as upstream frameworks read them, ignoring case): bind it in path, or constrain another field',
          },
        ],
      });
      expect(validateConnectorPatch({ operations: operation('/repos/{Repo}/{repo}', {}).operations })).toEqual({
        ok: false,
        errors: [{ field: 'operations[0].path', message: 'parameters {Repo} and {repo} differ only in case: upstream frameworks may read them as one' }],
      });
    });

    it('accepts the same name bound in the path, and names that only look alike', () => {
      expect(fieldsOf(operation('/repos/{repo}', { repo: { in: 'path', field: 'repo', op: 'eq' } }))).toEqual([]);
      expect(fieldsOf(operation('/repos/{repo}', { r: { in: 'query', field: 'repos', op: 'eq' }, b: { in: 'body', field: 'owner.repo', op: 'eq' } }))).toEqual(
        [],
      );
      expect(fieldsOf(operation('/repos/{repo_id}/{repoid}', {}))).toEqual([]);
    });
  });

  it.each([
    ['an unknown type', { type: 'basic', token: 'x' }, ['credential.type']],
    ['a bearer without token', { type: 'bearer' }, ['credential.token']],
    ['a bearer token with a line break', { type: 'bearer', token: 'abc\r\nX-Evil: 1' }, ['credential.token']],
    ['an unknown credential member', { type: 'bearer', token: 't', extra: 1 }, ['credential.extra']],
    ['a header named Authorization', { type: 'header', name: 'Authorization', value: 'x' }, ['credential.name']],
    ['a header named host', { type: 'header', name: 'host', value: 'x' }, ['credential.name']],
    ['a hop-by-hop header', { type: 'header', name: 'Transfer-Encoding', value: 'chunked' }, ['credential.name']],
    ...[
      'Content-Type',
      'content-length',
      'Transfer-Encoding',
      'Connection',
      'Cookie',
      'TE',
      'Upgrade',
      'X-HTTP-Method-Override',
      'X-Method-Override',
      'X-Forwarded-For',
      'X-Forwarded-Anything',
      'Forwarded',
      'X-Original-URL',
      'X-Rewrite-URL',
      'X-Real-IP',
      'True-Client-IP',
      'DPoP',
      'Expect',
    ].map((name) => [`a header named ${name}`, { type: 'header', name, value: 'x' }, ['credential.name']] as [string, unknown, string[]]),
    ['a header name that is not a token', { type: 'header', name: 'X Api Key', value: 'x' }, ['credential.name']],
    ['a header value with a line break', { type: 'header', name: 'X-Api-Key', value: 'a\nb' }, ['credential.value']],
    [
      'a token_url that is not http(s)',
      { type: 'oauth2_client_credentials', token_url: 'file:///etc/passwd', client_id: 'c', client_secret: 's' },
      ['credential.token_url'],
    ],
    [
      'a client_credentials without secret',
      { type: 'oauth2_client_credentials', token_url: 'https://auth.example/token', client_id: 'c' },
      ['credential.client_secret'],
    ],
    [
      'a malformed scope',
      { type: 'oauth2_client_credentials', token_url: 'https://auth.example/token', client_id: 'c', client_secret: 's', scope: 'a  b' },
      ['credential.scope'],
    ],
    [
      'an authorization_code without scopes',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        client_id: 'c',
        client_secret: 's',
      },
      ['credential.scopes'],
    ],
    [
      'an authorization_code with a javascript: authorization_url',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'javascript:alert(1)',
        token_url: 'https://idp.example/token',
        client_id: 'c',
        client_secret: 's',
        scopes: [],
      },
      ['credential.authorization_url'],
    ],
    [
      'an authorization_code with a revocation_url carrying userinfo',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        revocation_url: 'https://u:p@idp.example/revoke',
        client_id: 'c',
        client_secret: 's',
        scopes: ['repo'],
      },
      ['credential.revocation_url'],
    ],
    [
      'an authorization_code with a scope that is not a token',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        client_id: 'c',
        client_secret: 's',
        scopes: ['a b'],
      },
      ['credential.scopes'],
    ],
    [
      'an authorization_code with both a secret and a key',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        client_id: 'c',
        client_secret: 's',
        private_key_jwt: { jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd' } },
        scopes: [],
      },
      ['credential.client_secret'],
    ],
    [
      'an authorization_code with a public key only',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        client_id: 'c',
        private_key_jwt: { jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' } },
        scopes: [],
      },
      ['credential.private_key_jwt.jwk'],
    ],
    [
      'an authorization_code with a symmetric key',
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        client_id: 'c',
        private_key_jwt: { jwk: { kty: 'oct', k: 'c2VjcmV0', d: 'x' } },
        scopes: [],
      },
      ['credential.private_key_jwt.jwk'],
    ],
    ['a credential that is a string', 'sk_live', ['credential']],
  ])('refuses %s', (_name, credential, fields) => {
    expect(fieldsOf({ ...payments(), credential })).toEqual(fields);
  });

  it('accepts each credential type and never repeats a secret in a message', () => {
    for (const credential of [
      { type: 'header', name: 'X-Api-Key', value: 'key value 1' },
      {
        type: 'oauth2_client_credentials',
        token_url: 'https://auth.example/token?tenant=1',
        client_id: 'writ',
        client_secret: 's3cret',
        scope: 'payouts:write read',
      },
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://github.example/login/oauth/authorize',
        token_url: 'https://github.example/login/oauth/access_token',
        revocation_url: 'https://github.example/revoke',
        issuer: 'https://github.example',
        client_id: 'Iv1.abc',
        client_secret: 's3cret',
        scopes: ['repo', 'read:user'],
      },
      {
        type: 'oauth2_authorization_code',
        authorization_url: 'https://idp.example/authorize',
        token_url: 'https://idp.example/token',
        client_id: 'writ',
        private_key_jwt: { jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd', kid: 'k1' } },
        scopes: ['read'],
      },
    ]) {
      expect(validateConnectorDefinition({ ...payments(), credential })).toMatchObject({ ok: true, value: { credential } });
    }
    const secret = 'sk_live_do_not_echo\n';
    const outcome = validateConnectorDefinition({ ...payments(), credential: { type: 'bearer', token: secret } });
    expect(JSON.stringify(outcome)).not.toContain('sk_live_do_not_echo');
  });

  it('reports every problem at once', () => {
    expect(fieldsOf({ id: 'X', operations: 'none', credential: { type: 'bearer' } })).toEqual(['id', 'name', 'base_url', 'operations', 'credential.token']);
    expect(fieldsOf(null)).toEqual(['']);
  });
});

describe('validateConnectorPatch', () => {
  it('validates only the members given and refuses id', () => {
    expect(validateConnectorPatch({ name: 'New' })).toEqual({ ok: true, value: { name: 'New' } });
    const outcome = validateConnectorPatch({ id: 'other', base_url: 'https://x.example?y', credential: { type: 'bearer', token: '' } });
    expect(outcome.ok).toBe(false);
    if (outcome.ok) return;
    expect(outcome.errors.map((error) => error.field)).toEqual(['id', 'base_url', 'credential.token']);
  });
});

describe('catalogue bounds and credential removal', () => {
  const bounded = (binding: Record<string, unknown>) => {
    const input = payments();
    (input.operations[0] as { constraints: Record<string, unknown> }).constraints.amount_max = { in: 'body', field: 'amount', op: 'lte', ...binding };
    return input;
  };

  it('accepts a header constraint on an http operation, GET included, and keeps it as given', () => {
    const input = payments();
    (input.operations[0] as { constraints: Record<string, unknown> }).constraints.account = { in: 'header', field: 'Stripe-Account', op: 'eq' };
    (input.operations[1] as { constraints: Record<string, unknown> }).constraints.orgs = { in: 'header', field: 'openai-organization', op: 'in' };
    const outcome = validateConnectorDefinition(input);
    expect(outcome.ok && outcome.value.operations.map((operation) => operation.constraints)).toEqual([
      expect.objectContaining({ account: { in: 'header', field: 'Stripe-Account', op: 'eq' } }),
      expect.objectContaining({ orgs: { in: 'header', field: 'openai-organization', op: 'in' } }),
    ]);
  });

  it('accepts request_headers on an http operation and keeps them as given; absent stays absent', () => {
    const input = payments();
    input.operations[0].request_headers = ['Stripe-Version', 'Idempotency-Key', 'accept'];
    const outcome = validateConnectorDefinition(input);
    expect(outcome.ok && outcome.value.operations.map((operation) => operation.request_headers)).toEqual([
      ['Stripe-Version', 'Idempotency-Key', 'accept'],
      undefined,
    ]);
    input.operations[0].request_headers = [];
    const empty = validateConnectorDefinition(input);
    expect(empty.ok && empty.value.operations[0].request_headers).toEqual([]);
  });

  it.each([
    ['not an array', 'Stripe-Version', 'operations[0].request_headers'],
    ['too many', Array.from({ length: 65 }, (_, index) => `X-H${index}`), 'operations[0].request_headers'],
    ['a name that is not a token', ['X Version'], 'operations[0].request_headers[0]'],
    ['a name too long', ['X'.repeat(257)], 'operations[0].request_headers[0]'],
    ['not a string', [7], 'operations[0].request_headers[0]'],
    ['Authorization', ['Authorization'], 'operations[0].request_headers[0]'],
    ['Host', ['host'], 'operations[0].request_headers[0]'],
    ['Cookie', ['Cookie'], 'operations[0].request_headers[0]'],
    ['a hop-by-hop header', ['Connection'], 'operations[0].request_headers[0]'],
    ['a routing header, spelled with _', ['x_forwarded_host'], 'operations[0].request_headers[0]'],
    ['a method override', ['X-HTTP-Method-Override'], 'operations[0].request_headers[0]'],
    ['a name twice in two cases', ['Stripe-Version', 'stripe_version'], 'operations[0].request_headers[1]'],
  ])('refuses request_headers with %s, naming the entry', (_label, list, field) => {
    const input = payments();
    input.operations[0].request_headers = list;
    expect(fieldsOf(input)).toEqual([field]);
  });

  it('accepts min and max on a constraint and keeps them', () => {
    const outcome = validateConnectorDefinition(bounded({ min: 0, max: 1000000 }));
    expect(outcome.ok && outcome.value.operations[0].constraints.amount_max).toEqual({ in: 'body', field: 'amount', op: 'lte', min: 0, max: 1000000 });
  });

  it.each([
    [{ min: '0' }, 'operations[0].constraints.amount_max.min'],
    [{ max: 2 ** 53 }, 'operations[0].constraints.amount_max.max'],
    [{ min: -0 }, 'operations[0].constraints.amount_max.min'],
    [{ min: 10, max: 5 }, 'operations[0].constraints.amount_max.max'],
  ])('refuses the bounds %j', (binding, field) => {
    expect(fieldsOf(bounded(binding))).toEqual([field]);
  });

  it('takes "credential": null in a change as a removal', () => {
    expect(validateConnectorPatch({ credential: null })).toEqual({ ok: true, value: { credential: null } });
  });
});

describe('mcp connectors', () => {
  const tools = () => ({
    id: 'tools',
    kind: 'mcp',
    name: 'Tools',
    base_url: 'https://mcp.example/mcp',
    operations: [
      { name: 'transfer', risk: 'write', constraints: { amount_max: { in: 'arguments', field: 'payment.amount', op: 'lte', max: 1000 } } },
      { name: 'lookup', risk: 'read' },
    ],
  });
  const fields = (input: unknown, patchKind?: 'http' | 'mcp') => {
    const outcome = patchKind ? validateConnectorPatch(input, patchKind) : validateConnectorDefinition(input);
    return outcome.ok ? [] : outcome.errors.map((error) => error.field).sort();
  };

  it('accepts tools {name, risk, constraints} whose constraints read arguments, and keeps the kind', () => {
    expect(validateConnectorDefinition(tools())).toEqual({
      ok: true,
      value: {
        id: 'tools',
        kind: 'mcp',
        name: 'Tools',
        base_url: 'https://mcp.example/mcp',
        operations: [
          { name: 'transfer', risk: 'write', constraints: { amount_max: { in: 'arguments', field: 'payment.amount', op: 'lte', max: 1000 } } },
          { name: 'lookup', risk: 'read', constraints: {} },
        ],
      },
    });
    expect(validateConnectorDefinition({ ...tools(), kind: undefined, operations: payments().operations })).toMatchObject({
      ok: true,
      value: { kind: 'http' },
    });
  });

  it('refuses http-only members on tools and other locations than arguments', () => {
    const definition = tools();
    definition.operations[0] = { ...definition.operations[0], method: 'POST', path: '/x', constraints: { a: { in: 'body', field: 'a', op: 'eq' } } } as never;
    expect(fields(definition)).toEqual(['operations[0].constraints.a.in', 'operations[0].method', 'operations[0].path']);
  });

  it('accepts request_headers on a tool (an MCP server may act on headers) and refuses those the gateway drops or sets', () => {
    const definition = tools();
    definition.operations[1] = { name: 'lookup', risk: 'read', request_headers: ['Idempotency-Key'] } as never;
    const outcome = validateConnectorDefinition(definition);
    expect(outcome.ok && outcome.value.operations.map((operation) => operation.request_headers)).toEqual([undefined, ['Idempotency-Key']]);
    definition.operations[1] = { name: 'lookup', risk: 'read', request_headers: ['Authorization', 'x_forwarded_host'] } as never;
    expect(fields(definition)).toEqual(['operations[1].request_headers[0]', 'operations[1].request_headers[1]']);
    expect(fields({ operations: [{ name: 'lookup', risk: 'read', request_headers: 'X-Tenant-ID' }] }, 'mcp')).toEqual(['operations[0].request_headers']);
  });

  it('refuses a header constraint on a tool, naming the field', () => {
    const definition = tools();
    definition.operations[1] = { name: 'lookup', risk: 'read', constraints: { account: { in: 'header', field: 'Stripe-Account', op: 'eq' } } } as never;
    const outcome = validateConnectorDefinition(definition);
    expect(outcome).toEqual({ ok: false, errors: [{ field: 'operations[1].constraints.account.in', message: expect.stringContaining('arguments') }] });
    expect(fields({ operations: definition.operations }, 'mcp')).toEqual(['operations[1].constraints.account.in']);
  });

  it('refuses arguments on an http connector, an unknown kind, and duplicate tool names', () => {
    const http = payments();
    (http.operations[0].constraints as Record<string, unknown>).x = { in: 'arguments', field: 'x', op: 'eq' };
    expect(fields(http)).toEqual(['operations[0].constraints.x.in']);
    expect(fields({ ...tools(), kind: 'grpc' })).toEqual(['kind']);
    const twice = tools();
    twice.operations[1] = { ...twice.operations[0] };
    expect(fields(twice)).toEqual(['operations[1].name']);
    // A server that looks tools up ignoring case would run `transfer` for a grant of `Transfer`.
    const cased = tools();
    cased.operations[1] = { name: 'Transfer', risk: 'read' };
    expect(fields(cased)).toEqual(['operations[1].name']);
  });

  it('checks a change by the stored kind; the kind itself cannot change', () => {
    expect(fields({ operations: [{ name: 'lookup', risk: 'read' }] }, 'mcp')).toEqual([]);
    expect(fields({ operations: [{ name: 'lookup', risk: 'read' }] }, 'http')).toEqual(['operations[0].method', 'operations[0].path']);
    expect(fields({ kind: 'http' }, 'mcp')).toEqual(['kind']);
  });
});
