import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, databaseOnThisHost, loadConfig, parseHostName } from './writ-config';

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig({}, '/srv/writ');
    expect(config).toMatchObject({
      databaseUrl: undefined,
      dataDir: '/srv/writ/.writ',
      host: '127.0.0.1',
      authPort: 4000,
      gatewayPort: 4001,
      adminPort: 4002,
      issuer: 'http://localhost:4000',
      gatewayUrl: 'http://localhost:4001',
      logLevel: 'info',
      gatewayBodyLimit: 1048576,
      upstreamConnectTimeoutMs: 5000,
      upstreamTimeoutMs: 30000,
      auditCheckpointFile: '/srv/writ/.writ/audit-checkpoints.jsonl',
      auditCheckpointEvery: 1000,
      auditCheckpointSeconds: 60,
    });
  });

  it('places the audit checkpoint file, or turns it off, and bounds the checkpoint triggers', () => {
    expect(loadConfig({ WRIT_DATA_DIR: '/data' }, '/srv').auditCheckpointFile).toBe('/data/audit-checkpoints.jsonl');
    expect(loadConfig({ WRIT_AUDIT_CHECKPOINT_FILE: 'audit/cp.jsonl' }, '/srv').auditCheckpointFile).toBe('/srv/audit/cp.jsonl');
    expect(loadConfig({ WRIT_AUDIT_CHECKPOINT_FILE: 'off' }).auditCheckpointFile).toBeUndefined();
    const config = loadConfig({ WRIT_AUDIT_CHECKPOINT_EVERY: '5', WRIT_AUDIT_CHECKPOINT_SECONDS: '2' });
    expect([config.auditCheckpointEvery, config.auditCheckpointSeconds]).toEqual([5, 2]);
    expect(() => loadConfig({ WRIT_AUDIT_CHECKPOINT_EVERY: '0' })).toThrow(/WRIT_AUDIT_CHECKPOINT_EVERY must be an integer from 1/);
    expect(() => loadConfig({ WRIT_AUDIT_CHECKPOINT_SECONDS: '90000' })).toThrow(/WRIT_AUDIT_CHECKPOINT_SECONDS/);
    expect(() => loadConfig({ WRIT_AUDIT_CHECKPOINT_SECONDS: '1.5' })).toThrow(/WRIT_AUDIT_CHECKPOINT_SECONDS/);
  });

  it('reads the operations settings with their defaults and refuses values out of range', () => {
    expect(loadConfig({}).operations).toEqual({
      shutdownTimeoutSeconds: 25,
      workers: 1,
      poolSize: undefined,
      checkoutTimeoutMs: 3000,
      statementTimeoutMs: 10_000,
      lockTimeoutMs: 3000,
      idleInTransactionTimeoutMs: 30_000,
      maxInFlight: 200,
      keyRefreshSeconds: 5,
      keyRotationDays: 90,
      ecdsa: availableParallelism() >= 3 ? 'thread-pool' : 'main-thread',
    });
    const config = loadConfig({
      WRIT_SHUTDOWN_TIMEOUT_SECONDS: '0',
      WRIT_WORKERS: '3',
      WRIT_DB_POOL_SIZE: '8',
      WRIT_DB_CHECKOUT_TIMEOUT_MS: '500',
      WRIT_DB_STATEMENT_TIMEOUT_MS: '2000',
      WRIT_DB_LOCK_TIMEOUT_MS: '700',
      WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: '4000',
      WRIT_MAX_IN_FLIGHT: '4',
      WRIT_KEY_REFRESH_SECONDS: '1',
      WRIT_KEY_ROTATION_DAYS: '0',
      WRIT_ECDSA: 'main-thread',
    });
    expect(config.operations).toEqual({
      shutdownTimeoutSeconds: 0,
      workers: 3,
      poolSize: 8,
      checkoutTimeoutMs: 500,
      statementTimeoutMs: 2000,
      lockTimeoutMs: 700,
      idleInTransactionTimeoutMs: 4000,
      maxInFlight: 4,
      keyRefreshSeconds: 1,
      keyRotationDays: 0,
      ecdsa: 'main-thread',
    });
    expect(() => loadConfig({ WRIT_DB_POOL_SIZE: '1' })).toThrow(/WRIT_DB_POOL_SIZE must be an integer from 2/);
    expect(loadConfig({}).operations.workers).toBe(1);
    expect(loadConfig({ WRIT_WORKERS: 'auto' }).operations.workers).toBe(availableParallelism());
    for (const bad of ['0', '257', '2.5', 'all', ' 2'])
      expect(() => loadConfig({ WRIT_WORKERS: bad })).toThrow(`WRIT_WORKERS must be "auto" or an integer from 1 to 256, got "${bad}"`);
    expect(() => loadConfig({ WRIT_MAX_IN_FLIGHT: '0' })).toThrow(/WRIT_MAX_IN_FLIGHT/);
    expect(() => loadConfig({ WRIT_DB_STATEMENT_TIMEOUT_MS: '10s' })).toThrow(/WRIT_DB_STATEMENT_TIMEOUT_MS/);
  });

  it('bounds how long a caller may take to send a request, and how long an idle connection stays', () => {
    expect(loadConfig({}).http).toEqual({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5000,
      sendTimeoutMs: 30_000,
      metricsToken: undefined,
    });
    expect(
      loadConfig({
        WRIT_HTTP_HEADERS_TIMEOUT_MS: '2000',
        WRIT_HTTP_REQUEST_TIMEOUT_MS: '4000',
        WRIT_HTTP_KEEP_ALIVE_TIMEOUT_MS: '65000',
        WRIT_HTTP_SEND_TIMEOUT_MS: '120000',
      }).http,
    ).toEqual({
      headersTimeoutMs: 2000,
      requestTimeoutMs: 4000,
      keepAliveTimeoutMs: 65_000,
      sendTimeoutMs: 120_000,
    });
    expect(() => loadConfig({ WRIT_HTTP_SEND_TIMEOUT_MS: '50' })).toThrow(/WRIT_HTTP_SEND_TIMEOUT_MS must be an integer from 100/);
    expect(() => loadConfig({ WRIT_HTTP_HEADERS_TIMEOUT_MS: '0' })).toThrow(/WRIT_HTTP_HEADERS_TIMEOUT_MS must be an integer from 100/);
    expect(() => loadConfig({ WRIT_HTTP_HEADERS_TIMEOUT_MS: '20000', WRIT_HTTP_REQUEST_TIMEOUT_MS: '10000' })).toThrow(
      /WRIT_HTTP_REQUEST_TIMEOUT_MS must not be below WRIT_HTTP_HEADERS_TIMEOUT_MS/,
    );
    expect(() => loadConfig({ WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: '0' })).toThrow(/WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS/);
  });

  it('protects /metrics with a bearer token only when one is given, long enough', () => {
    expect(loadConfig({ WRIT_METRICS_TOKEN: 'm'.repeat(32) }).http.metricsToken).toBe('m'.repeat(32));
    expect(() => loadConfig({ WRIT_METRICS_TOKEN: 'short' })).toThrow(/WRIT_METRICS_TOKEN must be at least 32 characters/);
    expect(() => loadConfig({ WRIT_METRICS_TOKEN: `${'m'.repeat(32)} x` })).toThrow(/WRIT_METRICS_TOKEN/);
  });

  it('runs ECDSA on the thread pool only when a core is left for it, unless told where', () => {
    const cpus = availableParallelism();
    const remote = { WRIT_DATABASE_URL: 'postgres://writ@db.internal:5432/writ', WRIT_MASTER_KEY: Buffer.alloc(32, 1).toString('base64') };
    const local = { ...remote, WRIT_DATABASE_URL: 'postgres://writ@127.0.0.1:5432/writ' };
    // A core each for the workers, and one for a PostgreSQL on this host.
    if (cpus >= 2) expect(loadConfig({ ...remote, WRIT_WORKERS: String(cpus - 1) }).operations.ecdsa).toBe('thread-pool');
    expect(loadConfig({ ...remote, WRIT_WORKERS: String(cpus) }).operations.ecdsa).toBe('main-thread');
    expect(loadConfig({ ...remote, WRIT_WORKERS: 'auto' }).operations.ecdsa).toBe('main-thread');
    if (cpus >= 3) expect(loadConfig({ ...local, WRIT_WORKERS: String(cpus - 2) }).operations.ecdsa).toBe('thread-pool');
    expect(loadConfig({ ...local, WRIT_WORKERS: String(cpus - 1 || 1) }).operations.ecdsa).toBe('main-thread');
    expect(loadConfig({ ...remote, WRIT_WORKERS: String(cpus), WRIT_ECDSA: 'thread-pool' }).operations.ecdsa).toBe('thread-pool');
    expect(loadConfig({ WRIT_ECDSA: 'main-thread' }).operations.ecdsa).toBe('main-thread');
    for (const bad of ['pool', 'AUTO', ' main-thread'])
      expect(() => loadConfig({ WRIT_ECDSA: bad })).toThrow(`WRIT_ECDSA must be "auto", "thread-pool" or "main-thread", got "${bad}"`);
  });

  it('tells a PostgreSQL on this host from one elsewhere', () => {
    for (const local of [
      undefined,
      'postgres://writ@localhost/writ',
      'postgres://writ@127.0.0.1:5432/writ',
      'postgresql://writ@127.8.0.2/writ',
      'postgres://writ@[::1]:5432/writ',
      'postgres://writ@/writ?host=/var/run/postgresql',
      'postgres:///writ',
    ])
      expect([local, databaseOnThisHost(local)]).toEqual([local, true]);
    for (const remote of [
      'postgres://writ@db.internal/writ',
      'postgres://writ@10.0.0.5/writ',
      'postgres://writ@[2001:db8::1]/writ',
      'postgres://writ@localhost.example/writ',
    ])
      expect([remote, databaseOnThisHost(remote)]).toEqual([remote, false]);
  });

  it('turns tracing on only with an OTLP endpoint, and reads the traceparent forwarding switch', () => {
    expect(loadConfig({}).tracing).toEqual({ enabled: false, endpoint: undefined, serviceName: undefined, forwardTraceparent: true, sampleRatio: 1 });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/', OTEL_SERVICE_NAME: 'writ-eu' }).tracing).toEqual({
      enabled: true,
      endpoint: 'http://collector:4318/v1/traces',
      serviceName: 'writ-eu',
      forwardTraceparent: true,
      sampleRatio: 1,
    });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces', OTEL_SDK_DISABLED: 'true' }).tracing.enabled).toBe(false);
    // The specification's booleans: "true" in any case switches the SDK off.
    for (const disabled of ['TRUE', 'True', ' true'])
      expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: disabled }).tracing.enabled).toBe(false);
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'false' }).tracing.enabled).toBe(true);
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' }).tracing.enabled).toBe(false);
    expect(loadConfig({ WRIT_TRACE_FORWARD: 'false' }).tracing.forwardTraceparent).toBe(false);
    expect(() => loadConfig({ WRIT_TRACE_FORWARD: 'no' })).toThrow(/WRIT_TRACE_FORWARD must be true or false/);
  });

  it('reads the trace sampling ratio from the standard OTEL_TRACES_SAMPLER variables, parentbased_ forms alike', () => {
    const on = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' };
    const ratio = (env: Record<string, string>) => loadConfig({ ...on, ...env }).tracing.sampleRatio;
    expect(ratio({ OTEL_TRACES_SAMPLER: 'always_off' })).toBe(0);
    expect(ratio({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' })).toBe(0);
    expect(ratio({ OTEL_TRACES_SAMPLER: 'parentbased_always_on' })).toBe(1);
    expect(ratio({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' })).toBe(0.25);
    expect(ratio({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '.5' })).toBe(0.5);
    expect(ratio({ OTEL_TRACES_SAMPLER: 'traceidratio' })).toBe(1);
    expect(() => loadConfig({ ...on, OTEL_TRACES_SAMPLER: 'jaeger_remote' })).toThrow(/OTEL_TRACES_SAMPLER must be/);
    for (const bad of ['2', '-0.1', 'half', '1e-1'])
      expect(() => loadConfig({ ...on, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: bad })).toThrow(
        /OTEL_TRACES_SAMPLER_ARG must be a number/,
      );
    // Tracing off: a sampler set in the environment for other software is not Writ's to refuse.
    expect(loadConfig({ OTEL_TRACES_SAMPLER: 'jaeger_remote', OTEL_TRACES_SAMPLER_ARG: 'half' }).tracing).toMatchObject({ enabled: false, sampleRatio: 1 });
  });

  it('refuses gateway limits that are not integers in range', () => {
    expect(() => loadConfig({ WRIT_GATEWAY_BODY_LIMIT: '1e6' })).toThrow(/WRIT_GATEWAY_BODY_LIMIT must be an integer/);
    expect(() => loadConfig({ WRIT_UPSTREAM_TIMEOUT_MS: '0' })).toThrow(/WRIT_UPSTREAM_TIMEOUT_MS/);
    expect(loadConfig({ WRIT_UPSTREAM_CONNECT_TIMEOUT_MS: '250' }).upstreamConnectTimeoutMs).toBe(250);
  });

  it('reads WRIT_UPSTREAM_ALLOWED_NETWORKS: loopback by default only for the embedded database', () => {
    const key = Buffer.alloc(32, 7).toString('base64');
    expect(loadConfig({})).toMatchObject({ upstreamAllowedNetworks: ['127.0.0.0/8', '::1/128'], upstreamLoopbackByDefault: true });
    expect(loadConfig({ WRIT_DATABASE_URL: 'postgres://u@h/db', WRIT_MASTER_KEY: key })).toMatchObject({
      upstreamAllowedNetworks: [],
      upstreamLoopbackByDefault: false,
    });
    expect(loadConfig({ WRIT_UPSTREAM_ALLOWED_NETWORKS: '' })).toMatchObject({ upstreamAllowedNetworks: [], upstreamLoopbackByDefault: false });
    expect(loadConfig({ WRIT_UPSTREAM_ALLOWED_NETWORKS: ' 10.0.0.0/8, fd00::/8 ,192.168.1.7' }).upstreamAllowedNetworks).toEqual([
      '10.0.0.0/8',
      'fd00::/8',
      '192.168.1.7/32',
    ]);
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/08', '::1/129', '10.0.0.0/8/1']) {
      expect(() => loadConfig({ WRIT_UPSTREAM_ALLOWED_NETWORKS: bad })).toThrow(/WRIT_UPSTREAM_ALLOWED_NETWORKS must be comma-separated CIDRs/);
    }
  });

  it('reads the failure throttle, with documented defaults, and refuses nonsense', () => {
    expect(loadConfig({}).throttle).toEqual({ windowSeconds: 60, sourceFailures: 20, clientFailures: 10, auditEvents: 5 });
    const custom = loadConfig({
      WRIT_THROTTLE_WINDOW_SECONDS: '30',
      WRIT_THROTTLE_SOURCE_FAILURES: '100',
      WRIT_THROTTLE_CLIENT_FAILURES: '3',
      WRIT_THROTTLE_AUDIT_EVENTS: '1',
    });
    expect(custom.throttle).toEqual({ windowSeconds: 30, sourceFailures: 100, clientFailures: 3, auditEvents: 1 });
    expect(() => loadConfig({ WRIT_THROTTLE_SOURCE_FAILURES: '0' })).toThrow(/WRIT_THROTTLE_SOURCE_FAILURES must be an integer/);
    expect(() => loadConfig({ WRIT_THROTTLE_WINDOW_SECONDS: '1e3' })).toThrow(/WRIT_THROTTLE_WINDOW_SECONDS/);
    expect(() => loadConfig({ WRIT_THROTTLE_AUDIT_EVENTS: '-1' })).toThrow(/WRIT_THROTTLE_AUDIT_EVENTS/);
  });

  it('refuses an external database without a master key', () => {
    expect(() => loadConfig({ WRIT_DATABASE_URL: 'postgres://u@h/db' })).toThrow(/WRIT_MASTER_KEY is required/);
    expect(loadConfig({ WRIT_DATABASE_URL: 'postgres://u@h/db' }, '/', { masterKeyOptional: true }).masterKey).toBeUndefined();
  });

  it('takes an owner URL for the migrations only beside an external database', () => {
    const key = Buffer.alloc(32, 1).toString('base64');
    const config = loadConfig({ WRIT_DATABASE_URL: 'postgres://app@h/db', WRIT_MIGRATION_DATABASE_URL: 'postgres://owner@h/db', WRIT_MASTER_KEY: key });
    expect([config.databaseUrl, config.migrationDatabaseUrl]).toEqual(['postgres://app@h/db', 'postgres://owner@h/db']);
    expect(loadConfig({}).migrationDatabaseUrl).toBeUndefined();
    expect(() => loadConfig({ WRIT_MIGRATION_DATABASE_URL: 'postgres://owner@h/db' })).toThrow(/needs WRIT_DATABASE_URL/);
    expect(() => loadConfig({ WRIT_DATABASE_URL: 'postgres://app@h/db', WRIT_MIGRATION_DATABASE_URL: 'mysql://x', WRIT_MASTER_KEY: key })).toThrow(
      /WRIT_MIGRATION_DATABASE_URL must be a postgres/,
    );
  });

  it('refuses a newer database schema unless WRIT_ALLOW_NEWER_SCHEMA=true, and nothing but true or false', () => {
    expect(loadConfig({}).allowNewerSchema).toBe(false);
    expect(loadConfig({ WRIT_ALLOW_NEWER_SCHEMA: 'false' }).allowNewerSchema).toBe(false);
    expect(loadConfig({ WRIT_ALLOW_NEWER_SCHEMA: 'true' }).allowNewerSchema).toBe(true);
    expect(() => loadConfig({ WRIT_ALLOW_NEWER_SCHEMA: 'yes' })).toThrow(/WRIT_ALLOW_NEWER_SCHEMA must be true or false, got "yes"/);
  });

  it("bounds the migrations' lock waits: WRIT_MIGRATION_LOCK_TIMEOUT_MS (0 for none) and WRIT_MIGRATION_ATTEMPTS", () => {
    expect([loadConfig({}).migrationLockTimeoutMs, loadConfig({}).migrationAttempts]).toEqual([1000, 10]);
    const set = loadConfig({ WRIT_MIGRATION_LOCK_TIMEOUT_MS: '0', WRIT_MIGRATION_ATTEMPTS: '1' });
    expect([set.migrationLockTimeoutMs, set.migrationAttempts]).toEqual([0, 1]);
    expect(() => loadConfig({ WRIT_MIGRATION_LOCK_TIMEOUT_MS: '-1' })).toThrow(/WRIT_MIGRATION_LOCK_TIMEOUT_MS/);
    expect(() => loadConfig({ WRIT_MIGRATION_ATTEMPTS: '0' })).toThrow(/WRIT_MIGRATION_ATTEMPTS/);
  });

  it('refuses a master key that is not 32 bytes', () => {
    expect(() => loadConfig({ WRIT_MASTER_KEY: Buffer.alloc(16).toString('base64') })).toThrow(/exactly 32 bytes/);
  });

  it('accepts a 32-byte master key and strips trailing slashes from URLs', () => {
    const key = Buffer.alloc(32, 7);
    const config = loadConfig({ WRIT_MASTER_KEY: key.toString('base64'), WRIT_ISSUER: 'https://auth.example/' });
    expect(config.masterKey?.equals(key)).toBe(true);
    expect(config.issuer).toBe('https://auth.example');
  });

  it('reads previous master keys, comma-separated, and refuses a bad one without printing it', () => {
    const [a, c] = [Buffer.alloc(32, 1), Buffer.alloc(32, 3)];
    const current = Buffer.alloc(32, 2).toString('base64');
    expect(loadConfig({ WRIT_MASTER_KEY: current }).masterKeyPrevious).toEqual([]);
    const config = loadConfig({ WRIT_MASTER_KEY: current, WRIT_MASTER_KEY_PREVIOUS: ` ${a.toString('base64')}, ${c.toString('base64')}` });
    expect(config.masterKeyPrevious.map((key) => key.toString('hex'))).toEqual([a.toString('hex'), c.toString('hex')]);
    const short = Buffer.from('a-leaked-but-short-key').toString('base64');
    for (const bad of [short, `${a.toString('base64')},${short}`, `${a.toString('base64')},`]) {
      let message = '';
      try {
        loadConfig({ WRIT_MASTER_KEY: current, WRIT_MASTER_KEY_PREVIOUS: bad });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/WRIT_MASTER_KEY_PREVIOUS must be comma-separated base64 encodings of exactly 32 bytes/);
      expect(message).not.toContain(short);
      expect(message).not.toContain(a.toString('base64'));
    }
  });

  describe('WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS', () => {
    let dir: string;
    /** A fresh Ed25519 key pair as JWKs, the public one as audit:verify --print-public-keys prints it. */
    const keyPair = () => {
      const { privateKey } = generateKeyPairSync('ed25519');
      const secret = privateKey.export({ format: 'jwk' }) as { kty: string; crv: string; x: string; d: string };
      const kid = createHash('sha256')
        .update(JSON.stringify({ crv: 'Ed25519', kty: 'OKP', x: secret.x }), 'utf8')
        .digest('base64url');
      return { public: { kty: 'OKP', crv: 'Ed25519', x: secret.x, kid, alg: 'EdDSA', use: 'sig' }, private: { ...secret, kid, alg: 'EdDSA', use: 'sig' } };
    };
    const file = (name: string, content: unknown) => {
      const path = join(dir, name);
      writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
      return path;
    };
    const problem = (value: string) => {
      try {
        loadConfig({ WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: value }, dir);
      } catch (error) {
        return (error as Error).message;
      }
      return 'accepted';
    };

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'writ-config-keys-'));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('is empty by default, and reads JWKS and single-JWK files, relative to the working directory, once per key', () => {
      expect(loadConfig({}).auditCheckpointPublicKeys).toEqual([]);
      const [a, b, c] = [keyPair(), keyPair(), keyPair()];
      file('a.json', { keys: [a.public] });
      file('bc.json', { keys: [b.public, c.public, a.public] });
      // A JWK alone, without the optional members: normalised, its kid computed.
      const bare = file('bare.json', { kty: 'OKP', crv: 'Ed25519', x: c.public.x });
      const config = loadConfig({ WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ` a.json, ${join(dir, 'bc.json')} ,${bare}` }, dir);
      expect(config.auditCheckpointPublicKeys).toEqual([a.public, b.public, c.public]);
    });

    it('refuses to start on an unreadable file, naming the variable and the path', () => {
      const missing = join(dir, 'missing.json');
      expect(problem(missing)).toContain(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ${missing} cannot be read (ENOENT)`);
      mkdirSync(join(dir, 'a-directory'), { recursive: true });
      expect(problem('a-directory')).toContain(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ${join(dir, 'a-directory')} is not a file`);
      const huge = file('huge.json', ' '.repeat(65 * 1024));
      expect(problem(huge)).toContain(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ${huge} is larger than`);
      expect(problem(`${file('one.json', { keys: [keyPair().public] })},`)).toMatch(
        /WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS must be comma-separated paths .*item 2 is empty/,
      );
    });

    it('refuses anything but Ed25519 public JWKs whose kid is their thumbprint', () => {
      const good = keyPair().public;
      const { privateKey: rsa } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const { privateKey: p256 } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const cases: Array<[string, unknown, RegExp]> = [
        ['not-json.json', 'not json {', /is not JSON/],
        ['empty-set.json', { keys: [] }, /holds no key/],
        ['keys-object.json', { keys: { a: good } }, /holds no key/],
        ['null.json', 'null', /holds a key that is not a JWK object/],
        ['string-key.json', { keys: ['abc'] }, /holds a key that is not a JWK object/],
        [
          'rsa.json',
          { keys: [{ ...(rsa.export({ format: 'jwk' }) as object), d: undefined, p: undefined, q: undefined, dp: undefined, dq: undefined, qi: undefined }] },
          /not an Ed25519 public key/,
        ],
        ['p256.json', { kty: 'EC', crv: 'P-256', x: (p256.export({ format: 'jwk' }) as { x: string }).x }, /not an Ed25519 public key/],
        ['x25519.json', { ...good, crv: 'X25519' }, /not an Ed25519 public key/],
        ['short-x.json', { ...good, x: good.x.slice(0, 40) }, /"x" is not the base64url of 32 bytes/],
        ['padded-x.json', { ...good, x: `${good.x}=` }, /"x" is not the base64url of 32 bytes/],
        ['no-x.json', { kty: 'OKP', crv: 'Ed25519' }, /"x" is not the base64url of 32 bytes/],
        ['alg.json', { ...good, alg: 'ES256' }, /"alg" is not "EdDSA"/],
        ['use.json', { ...good, use: 'enc' }, /"use" is not "sig"/],
        // A kid that is not the key's own could shadow another trusted key's checkpoints.
        ['kid.json', { ...good, kid: keyPair().public.kid }, /"kid" is not its RFC 7638 thumbprint/],
        ['one-bad-of-two.json', { keys: [good, { ...good, crv: 'Ed448' }] }, /not an Ed25519 public key/],
      ];
      for (const [name, content, expected] of cases) {
        const path = file(name, content);
        const message = problem(path);
        expect([name, message]).toEqual([name, expect.stringContaining(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ${path} `)]);
        expect([name, message]).toEqual([name, expect.stringMatching(expected)]);
      }
    });

    it('refuses a private key given by mistake, without printing it', () => {
      const pair = keyPair();
      for (const [name, content] of [
        ['private.json', pair.private],
        ['private-set.json', { keys: [keyPair().public, pair.private] }],
        ['symmetric.json', { kty: 'oct', k: pair.private.d }],
      ] as const) {
        const path = file(name, content);
        const message = problem(path);
        expect(message).toContain(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ${path} holds a private key`);
        expect(message).not.toContain(pair.private.d);
      }
    });

    it('names every bad file at once', () => {
      const [first, second] = [join(dir, 'nope-1.json'), join(dir, 'nope-2.json')];
      const message = problem(`${first},${file('fine.json', keyPair().public)},${second}`);
      expect(message).toContain(first);
      expect(message).toContain(second);
      expect(message).not.toContain('fine.json');
    });
  });

  it('names every invalid variable at once', () => {
    try {
      loadConfig({ WRIT_AUTH_PORT: 'x', WRIT_LOG_LEVEL: 'loud', WRIT_ISSUER: 'ftp://x' });
      throw new Error('expected a ConfigError');
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems).toHaveLength(3);
    }
  });

  it('leaves the approval webhook off by default, and reads it with its secret', () => {
    expect(loadConfig({}).approvalWebhook).toBeUndefined();
    const plain = loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/writ', WRIT_APPROVAL_WEBHOOK_SECRET: 'x'.repeat(32) });
    expect(plain.approvalWebhook).toEqual({ url: 'https://hooks.example/writ', secret: Buffer.from('x'.repeat(32)), backoffMs: 5000, maxAttempts: 8 });
    const key = Buffer.alloc(32, 3);
    const standard = loadConfig({
      WRIT_APPROVAL_WEBHOOK_URL: 'http://127.0.0.1:9000/hook',
      WRIT_APPROVAL_WEBHOOK_SECRET: `whsec_${key.toString('base64')}`,
      WRIT_APPROVAL_WEBHOOK_BACKOFF_MS: '50',
      WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS: '3',
    });
    expect(standard.approvalWebhook).toMatchObject({ secret: key, backoffMs: 50, maxAttempts: 3 });
  });

  it('refuses an approval webhook without a strong secret, with a bad URL, or a secret alone', () => {
    expect(() => loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/x' })).toThrow(/WRIT_APPROVAL_WEBHOOK_SECRET is required/);
    expect(() => loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/x', WRIT_APPROVAL_WEBHOOK_SECRET: 'short' })).toThrow(/at least 32 characters/);
    expect(() => loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/x', WRIT_APPROVAL_WEBHOOK_SECRET: 'whsec_AAAA' })).toThrow(/at least 24 bytes/);
    const secret = 's'.repeat(40);
    expect(() => loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'ftp://hooks.example/x', WRIT_APPROVAL_WEBHOOK_SECRET: secret })).toThrow(/absolute http\(s\) URL/);
    expect(() => loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://user:pw@hooks.example/x', WRIT_APPROVAL_WEBHOOK_SECRET: secret })).toThrow(
      /without userinfo/,
    );
    expect(() => loadConfig({ WRIT_APPROVAL_WEBHOOK_SECRET: secret })).toThrow(/without WRIT_APPROVAL_WEBHOOK_URL/);
    expect(() =>
      loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/x', WRIT_APPROVAL_WEBHOOK_SECRET: secret, WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS: '0' }),
    ).toThrow(/MAX_ATTEMPTS/);
    try {
      loadConfig({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/x', WRIT_APPROVAL_WEBHOOK_SECRET: 'whsec_c2hvcnQ=' });
    } catch (error) {
      expect((error as Error).message).not.toContain('c2hvcnQ');
    }
  });

  describe('WRIT_ALLOWED_HOSTS', () => {
    it('defaults, bound to loopback, to loopback names and the issuer and gateway hosts', () => {
      const config = loadConfig({ WRIT_ISSUER: 'https://Writ.Example.com', WRIT_GATEWAY_URL: 'https://gw.example.com:8443/base' });
      expect(config.allowedHosts).toEqual({ names: ['writ.example.com', 'gw.example.com'], namesWithPort: [], loopbackNames: true });
      expect(config.anyHostByDefault).toBe(false);
      expect(loadConfig({ WRIT_HOST: '::1' }).allowedHosts?.loopbackNames).toBe(true);
      expect(loadConfig({ WRIT_HOST: 'localhost' }).allowedHosts?.loopbackNames).toBe(true);
    });

    it('takes every spelling of a loopback listen address as loopback, not as "any Host"', () => {
      for (const host of ['0:0:0:0:0:0:0:1', '::0:1', '::ffff:127.0.0.1', 'LOCALHOST', 'localhost.', '127.1', '127.255.255.254']) {
        const config = loadConfig({ WRIT_HOST: host });
        expect({ host, loopbackNames: config.allowedHosts?.loopbackNames, anyHostByDefault: config.anyHostByDefault }).toEqual({
          host,
          loopbackNames: true,
          anyHostByDefault: false,
        });
      }
      for (const host of ['0.0.0.0', '::', '::ffff:10.0.0.1', '10.0.0.1', '128.0.0.1', 'localhost.example.com']) {
        expect({ host, anyHostByDefault: loadConfig({ WRIT_HOST: host }).anyHostByDefault }).toEqual({ host, anyHostByDefault: true });
      }
    });

    it('accepts any Host when unset on another listen address (with a warning), or when set to *', () => {
      const open = loadConfig({ WRIT_HOST: '0.0.0.0' });
      expect(open.allowedHosts).toBeUndefined();
      expect(open.anyHostByDefault).toBe(true);
      const star = loadConfig({ WRIT_HOST: '0.0.0.0', WRIT_ALLOWED_HOSTS: '*' });
      expect(star.allowedHosts).toBeUndefined();
      expect(star.anyHostByDefault).toBe(false);
      expect(loadConfig({ WRIT_ALLOWED_HOSTS: '*' }).allowedHosts).toBeUndefined();
    });

    it('reads a list of names, normalised, with the issuer and gateway hosts and nothing else', () => {
      const config = loadConfig({ WRIT_HOST: '0.0.0.0', WRIT_ALLOWED_HOSTS: ' Admin.Example.COM. , admin.internal:4002,[0:0::1],::2, 127.1:80 ' });
      expect(config.allowedHosts).toEqual({
        names: ['localhost', 'admin.example.com', '[::1]', '[::2]'],
        namesWithPort: ['admin.internal:4002', '127.0.0.1:80'],
        loopbackNames: false,
      });
      expect(config.anyHostByDefault).toBe(false);
    });

    it.each(['', 'user@host', 'host/path', 'host:0', 'host:65536', 'host:x', '[not-ipv6]', 'a b', '*.example.com', 'http://host'])(
      'refuses the entry "%s"',
      (entry) => {
        expect(() => loadConfig({ WRIT_ALLOWED_HOSTS: `ok.example,${entry}` })).toThrow(/WRIT_ALLOWED_HOSTS must be comma-separated host or host:port names/);
      },
    );

    it('reads a Host as the URL standard reads a host', () => {
      expect(parseHostName('LOCALHOST.:4002')).toEqual({ name: 'localhost', port: 4002 });
      expect(parseHostName('[0:0:0:0:0:0:0:1]')).toEqual({ name: '[::1]', port: undefined });
      expect(parseHostName('127.1')).toEqual({ name: '127.0.0.1', port: undefined });
      expect(parseHostName('xn--bcher-kva.example')).toEqual({ name: 'xn--bcher-kva.example', port: undefined });
      for (const bad of ['', ':80', '.', 'host..', 'a@b', '[::1', '::1', 'host:', 'host:80:80', 'h%6fst']) expect(parseHostName(bad)).toBeUndefined();
    });
  });
});

describe('loadConfig: operator mistakes stop the start, naming the variable, never echoing a secret', () => {
  const problemsOf = (env: Record<string, string>): string[] => {
    try {
      loadConfig(env, '/srv');
    } catch (error) {
      if (error instanceof ConfigError) return error.problems;
      throw error;
    }
    return [];
  };
  const masterKey = Buffer.alloc(32, 9).toString('base64');

  it('reads a port only as decimal digits: no exponent, hex, binary, fraction, sign or spaces (a blank one is not port 0)', () => {
    for (const bad of ['1e3', ' 10', '10 ', '0x10', '0b11', '0o7', '4000.0', '+4000', '-1', '10abc', 'Infinity', '65536', '99999999999999999999', '  ']) {
      expect({ bad, problems: problemsOf({ WRIT_AUTH_PORT: bad }) }).toEqual({
        bad,
        problems: [`WRIT_AUTH_PORT must be a port number (0-65535), got "${bad}"`],
      });
    }
    expect(loadConfig({ WRIT_AUTH_PORT: '0', WRIT_GATEWAY_PORT: '65535', WRIT_ADMIN_PORT: '08080' })).toMatchObject({
      authPort: 0,
      gatewayPort: 65535,
      adminPort: 8080,
    });
    expect(loadConfig({ WRIT_AUTH_PORT: '' }).authPort).toBe(4000);
  });

  it('refuses an issuer or gateway URL with userinfo, or with an empty query or fragment, without echoing the password', () => {
    for (const name of ['WRIT_ISSUER', 'WRIT_GATEWAY_URL']) {
      for (const bad of [
        'https://writ:hunter2-password@auth.example',
        'https://writ@auth.example',
        'https://auth.example/?',
        'https://auth.example/#',
        'https://auth.example/x?a=1',
      ]) {
        const problems = problemsOf({ [name]: bad });
        expect({ bad, problems }).toEqual({
          bad,
          problems: [expect.stringMatching(new RegExp(`^${name} must be an http\\(s\\) URL without userinfo, query or fragment`))],
        });
        expect(problems.join()).not.toContain('hunter2');
      }
    }
    // Invalid for another reason (the port), still not echoed.
    expect(problemsOf({ WRIT_ISSUER: 'https://u:hunter2@auth.example:99999' }).join()).not.toContain('hunter2');
    expect(loadConfig({ WRIT_ISSUER: 'https://auth.example/realms/a@b/' }).issuer).toBe('https://auth.example/realms/a@b');
  });

  it('refuses a malformed database URL naming the variable, never its password nor the driver message', () => {
    for (const name of ['WRIT_DATABASE_URL', 'WRIT_MIGRATION_DATABASE_URL']) {
      for (const bad of [
        'postgres://writ:hunter2@db:notaport/writ',
        'postgres://writ:hunter2@db:99999/writ',
        'postgres://writ:hunter2%zz@db/writ',
        'postgres://writ:hunter2@[::1/writ',
      ]) {
        const problems = problemsOf({ WRIT_DATABASE_URL: 'postgres://writ@db/writ', WRIT_MASTER_KEY: masterKey, [name]: bad });
        expect({ bad, problems }).toEqual({ bad, problems: [expect.stringMatching(new RegExp(`^${name} is not a valid postgres:// URL \\(not shown`))] });
        expect(problems.join()).not.toContain('hunter2');
      }
    }
    expect(problemsOf({ WRIT_DATABASE_URL: 'postgres://writ:hunter2@db/writ?sslrootcert=/nonexistent/ca.pem', WRIT_MASTER_KEY: masterKey })).toEqual([
      'WRIT_DATABASE_URL names an sslcert, sslkey or sslrootcert file that cannot be read (ENOENT)',
    ]);
    expect(
      loadConfig({ WRIT_DATABASE_URL: 'postgres://writ:p%40ss@db.internal:6432/writ?sslmode=verify-full', WRIT_MASTER_KEY: masterKey }).databaseUrl,
    ).toContain('db.internal:6432');
    expect(loadConfig({ WRIT_DATABASE_URL: 'postgresql:///writ?host=/var/run/postgresql', WRIT_MASTER_KEY: masterKey }).databaseUrl).toBeDefined();
  });

  it('refuses a listen address that cannot be one (spaces, a port, brackets, a bad IPv4), naming WRIT_HOST', () => {
    for (const bad of [' 0.0.0.0', '0.0.0.0 ', 'not a host', '127.0.0.1:4000', '[::1]', '256.1.1.1', 'http://0.0.0.0', 'host/x']) {
      expect({ bad, problems: problemsOf({ WRIT_HOST: bad }) }).toEqual({
        bad,
        problems: [`WRIT_HOST must be an IP address (IPv6 without brackets) or a host name, without a port or spaces, got "${bad}"`],
      });
    }
    for (const good of ['0.0.0.0', '::', '::1', 'fe80::1%eth0', 'localhost', 'writ-0.writ.svc.cluster.local', '127.1']) {
      expect(loadConfig({ WRIT_HOST: good }).host).toBe(good);
    }
  });

  it('refuses one secret used for two purposes, naming both variables and not the value', () => {
    const token = 't'.repeat(40);
    expect(problemsOf({ WRIT_ADMIN_TOKEN: token, WRIT_METRICS_TOKEN: token })).toEqual([
      'WRIT_METRICS_TOKEN must not be the value of WRIT_ADMIN_TOKEN: give each secret its own value (one purpose each)',
    ]);
    expect(problemsOf({ WRIT_APPROVAL_WEBHOOK_URL: 'https://hooks.example/w', WRIT_APPROVAL_WEBHOOK_SECRET: token, WRIT_METRICS_TOKEN: token })).toEqual([
      'WRIT_APPROVAL_WEBHOOK_SECRET must not be the value of WRIT_METRICS_TOKEN: give each secret its own value (one purpose each)',
    ]);
    const problems = problemsOf({ WRIT_MASTER_KEY: masterKey, WRIT_ADMIN_TOKEN: masterKey });
    expect(problems).toEqual(['WRIT_ADMIN_TOKEN must not be the value of WRIT_MASTER_KEY: give each secret its own value (one purpose each)']);
    expect(problems.join()).not.toContain(masterKey);
    expect(problemsOf({ WRIT_ADMIN_TOKEN: token, WRIT_METRICS_TOKEN: 'm'.repeat(40), WRIT_MASTER_KEY: masterKey })).toEqual([]);
  });

  it('refuses an admin token that could never be sent as a bearer token (spaces, control characters)', () => {
    for (const bad of [' '.repeat(40), `${'a'.repeat(20)} ${'b'.repeat(20)}`, `${'a'.repeat(40)}\n`, `${'a'.repeat(40)}\t`]) {
      expect(problemsOf({ WRIT_ADMIN_TOKEN: bad })).toEqual(['WRIT_ADMIN_TOKEN must be at least 32 characters, without spaces or control characters']);
    }
  });

  it('reports WRIT_ variables nothing reads (a typo), with the name meant, and never their values', () => {
    const config = loadConfig({
      WRIT_MASTER_KEYS: masterKey,
      WRIT_METRIC_TOKEN: 'm'.repeat(40),
      writ_admin_token: 'a'.repeat(40),
      WRIT_SOMETHING_ELSE: '1',
      WRIT_TEST_ADMIN_URL: 'postgres://x',
      WRIT_BENCH_ROUNDS: '3',
      WRIT_OPA: '/usr/bin/opa',
      OTHER_VARIABLE: 'x',
    });
    expect(config.unknownVariables).toEqual([
      { name: 'WRIT_MASTER_KEYS', suggestion: 'WRIT_MASTER_KEY' },
      { name: 'WRIT_METRIC_TOKEN', suggestion: 'WRIT_METRICS_TOKEN' },
      { name: 'WRIT_SOMETHING_ELSE', suggestion: undefined },
      { name: 'writ_admin_token', suggestion: 'WRIT_ADMIN_TOKEN' },
    ]);
    expect(JSON.stringify(config.unknownVariables)).not.toContain(masterKey);
    expect(loadConfig({}).unknownVariables).toEqual([]);
  });
});
