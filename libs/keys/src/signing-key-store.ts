import { createPrivateKey, type JsonWebKey, KeyObject, sign as cryptoSign } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, jwtVerify } from 'jose';
import type { CryptoKey, JWK, JWTHeaderParameters, JWTPayload, JWTVerifyResult } from 'jose';
import type { Pool, PoolClient } from 'pg';
import { type AuditedTransaction, watchCheckedOut } from '@writ/database';
import { TemporarilyUnavailableError } from '@writ/oauth';
import { MasterKey } from './master-key';
import { type RewrapControl, type RewrapCount, rewrapInBatches, UNCONTROLLED } from './sealed-rewrap';
import { VerifiedTokenCache } from './verified-token-cache';

/** The signing algorithm of Writ's tokens. */
export const SIGNING_ALG = 'ES256';

/** A public signing key as published in the JWKS. */
export interface PublicSigningKey extends JWK {
  kid: string;
  alg: string;
  use: 'sig';
}

interface LoadedKey {
  kid: string;
  status: 'next' | 'active' | 'retiring';
  publicJwk: PublicSigningKey;
  publicKey: CryptoKey;
  privateKey: CryptoKey;
  /** The same private key for `node:crypto` (see {@link SigningKeyStore.sign}). */
  privateKeyObject: KeyObject;
  createdAt: Date;
}

interface KeyRow {
  kid: string;
  private_sealed: Buffer;
  status: 'next' | 'active' | 'retiring';
  created_at: Date;
}

/** A token {@link SigningKeyStore.sign} produced, and the kid of the key that signed it. */
export interface SignedToken {
  /** The compact JWS. */
  token: string;
  /**
   * The `kid` of its protected header: the key that actually signed it. Record this one, never
   * {@link SigningKeyStore.activeKid} read later: a reload (a rotation on any instance) may
   * have changed the active key in between.
   */
  kid: string;
}

/** What a rotation committed: the key it made active and the key it retired. */
export interface KeyRotation {
  /** The new active key. */
  kid: string;
  /**
   * The key that was active in the database when the rotation took the key lock (read by the
   * statement that set it `retiring`), not this instance's possibly stale copy: concurrent
   * rotations serialise on the lock and each names the key it actually retired.
   */
  previousKid: string | null;
}

/** Thrown when a JWT is not one of ours or not valid for the asked use. */
export class TokenVerificationError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'TokenVerificationError';
  }
}

/** What a verified token must be. */
export interface VerifyOptions {
  /** Required `typ` header, e.g. `at+jwt`. */
  typ: string;
  /** Required `aud` (one of its values). */
  audience?: string | string[];
  /** Clock tolerance in seconds (default 0: our own tokens, our own clock). */
  clockTolerance?: number;
  /** The time to verify at (tests freeze it). */
  currentDate?: Date;
}

const KEY_LOCK = 7_311_043;
const RELOAD_THROTTLE_MS = 5_000;

/**
 * The longest lifetime of a token Writ signs: a task token lives at most as long as its task
 * (24 h, `MAX_TASK_TTL_SECONDS`); access tokens are shorter. A key that stopped signing this
 * long ago (plus a margin for clock skew) verifies nothing any more and is retired.
 */
export const LONGEST_TOKEN_LIFETIME_SECONDS = 86_400 + 300;

/**
 * How long an instance whose reads of the keys fail keeps signing with the key it last read as
 * active. That key may have been rotated out just after that read; it is retired
 * {@link LONGEST_TOKEN_LIFETIME_SECONDS} after the rotation, whose 5-minute margin must cover
 * what such an instance still signs with it (a token of the longest lifetime signed later than
 * that would be refused everywhere before its `exp`) and the clocks' skew. Past this, it signs
 * nothing (`503`) until it reads the keys again.
 */
export const STALE_KEYS_SIGNING_LIMIT_MS = 120_000;

/**
 * The audit event of a key change the store makes on its own (scheduled rotation, retirement):
 * `key.rotated` or `key.retired`, actor `system`, committed with the change.
 */
export interface KeyEvent {
  type: 'key.rotated' | 'key.retired';
  outcome: 'success';
  actor: { type: 'system'; id: string };
  data: Record<string, unknown>;
}

/** Actor of the changes {@link SigningKeyStore.startMaintenance} makes. */
const MAINTENANCE_ACTOR = { type: 'system', id: 'key-maintenance' } as const;

/** Options of {@link SigningKeyStore.startMaintenance}. */
export interface KeyMaintenanceOptions {
  /**
   * How often to re-read the keys: the fallback for a change notification lost with the
   * listening connection (a notified change is reloaded at once, see {@link reloadSoon}).
   */
  refreshMs: number;
  /** Rotate when the active key is older than this many days (0: never on schedule). */
  rotationDays: number;
  /** Told of a failed refresh, rotation or retirement (the next tick retries). */
  onError?: (error: unknown) => void;
  /** Told of a rotation or retirement this instance made. */
  onChange?: (change: { rotated?: string; retired?: number }) => void;
}

/**
 * Writ's ES256 signing keys: created at first start, private parts sealed with the master key
 * in PostgreSQL, shared by every instance. One key is active; the next one is published ahead
 * of its use (status `next`), so that verifiers caching the JWKS know it before it signs;
 * rotated-out keys stay in the JWKS (status `retiring`) until the tokens they signed have
 * expired.
 */
export class SigningKeyStore {
  private keys = new Map<string, LoadedKey>();
  private active: LoadedKey | undefined;
  /** When the last read of the keys started (an unknown kid reads them again at most this often). */
  private lastReload = 0;
  /** The last read of the keys failed (a key sealed under a master key this instance lacks, the database out of reach). */
  private reloadFailing = false;
  /** When the last read of the keys that succeeded started (what it read was current then). */
  private loadedAt = 0;
  private reloading: Promise<void> | undefined;
  /** The read that follows the one in flight, for the callers of {@link reload} that came during it. */
  private rereading: Promise<void> | undefined;
  private readonly verified = new VerifiedTokenCache();
  /** Where scheduled rotations and retirements commit with their events (see {@link recordChangesWith}). */
  private audited: AuditedTransaction<KeyEvent> | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly master: MasterKey,
    private readonly issuer: string,
    /** Sign on libuv's thread pool (the default) or synchronously: `WRIT_ECDSA`, see `OperationsConfig.ecdsa`. */
    private readonly signOnThreadPool = true,
  ) {}

  /**
   * Re-seals under the current master key every private key sealed under a previous one (all
   * statuses: a retired key's private half is no less secret), one conditional UPDATE per key
   * that applies only while the row still holds the value read.
   */
  async rewrapPrivateKeys(control: RewrapControl = UNCONTROLLED): Promise<RewrapCount> {
    return rewrapInBatches<{ kid: string; private_sealed: Buffer }>(
      this.pool,
      this.master.currentSealPrefix(),
      { table: 'signing_keys', key: 'kid', column: 'private_sealed' },
      async (row) => {
        const resealed = this.master.resealUnderCurrent(row.private_sealed, `signing_key:${row.kid}`);
        if (!resealed) return 'current';
        const updated = await this.pool.query('UPDATE signing_keys SET private_sealed = $3 WHERE kid = $1 AND private_sealed = $2', [
          row.kid,
          row.private_sealed,
          resealed.sealed,
        ]);
        return updated.rowCount === 1 ? 'rewrapped' : 'skipped';
      },
      control,
    );
  }

  /** Loads the keys, creating the first one if the cluster has none. Throws if none can be read. */
  async init(): Promise<void> {
    const client = await this.pool.connect();
    const release = watchCheckedOut(client);
    try {
      await client.query('SELECT pg_advisory_lock($1)', [KEY_LOCK]);
      const { rowCount } = await client.query(`SELECT 1 FROM signing_keys WHERE status = 'active'`);
      if (rowCount === 0) await this.insertNewKey(client, 'active');
      const next = await client.query(`SELECT 1 FROM signing_keys WHERE status = 'next'`);
      if (next.rowCount === 0) await this.insertNewKey(client, 'next');
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [KEY_LOCK]).catch(() => undefined);
      release();
    }
    await this.reload();
    if (!this.active) throw new Error('no active signing key could be loaded');
  }

  /**
   * From now on, the changes this store makes on its own (a scheduled rotation, the retirement
   * of old keys) commit in one transaction with their audit event (`key.rotated`,
   * `key.retired`). Without it (tests, tools) they commit alone.
   */
  recordChangesWith(audited: AuditedTransaction<KeyEvent>): void {
    this.audited = audited;
  }

  /**
   * Makes a new key active; the previous one keeps verifying until retired. Returns the new
   * kid and the kid of the key it retired, as the rotating transaction read them.
   */
  async rotate(): Promise<KeyRotation> {
    const rotation = await this.transaction((tx) => this.rotateIn(tx));
    await this.reload();
    return rotation;
  }

  /**
   * {@link rotate} in the caller's transaction (e.g. one that commits the rotation with its
   * audit event): takes the key lock until that transaction ends. The caller reloads the keys
   * ({@link reload}) once it committed.
   */
  async rotateIn(tx: Pick<PoolClient, 'query'>): Promise<KeyRotation> {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEY_LOCK]);
    return this.promoteNext(tx);
  }

  /**
   * Marks retiring keys that stopped signing more than `maxAgeSeconds` ago as retired (no
   * longer published nor trusted). A key stopped signing when the next key was created.
   * Returns how many were retired.
   */
  async retireOlderThan(maxAgeSeconds: number): Promise<number> {
    const retire = async (tx: Pick<PoolClient, 'query'>) =>
      (
        await tx.query<{ kid: string }>(
          `UPDATE signing_keys k SET status = 'retired', retired_at = now()
            WHERE k.status = 'retiring'
              AND coalesce(k.retiring_since, (SELECT min(n.created_at) FROM signing_keys n WHERE n.created_at > k.created_at)) < now() - make_interval(secs => $1)
           RETURNING kid`,
          [maxAgeSeconds],
        )
      ).rows.map((row) => row.kid);
    const retired = await this.commitChange(retire, (kids) =>
      kids.length ? [{ type: 'key.retired', outcome: 'success', actor: MAINTENANCE_ACTOR, data: { kids, max_age_seconds: maxAgeSeconds } }] : [],
    );
    if (retired.length) await this.reload();
    return retired.length;
  }

  /**
   * Rotates when the active key has been signing for more than `days` (checked under the key
   * lock, so that instances doing this together rotate once). Returns the new kid, if it rotated.
   *
   * A key's service starts when it becomes active, not when it was made: a key promoted from
   * `next` was made a whole period earlier, at the previous rotation. Its age since it was made
   * would call it due again right after it became active, and the second rotation would make
   * active the `next` key published a moment before, which verifiers caching the JWKS do not
   * know yet. It became active at the last rotation, when that rotation set the key it replaced
   * `retiring` (`retiring_since`); the first key, made active, became active when it was made.
   */
  async rotateIfOlderThan(days: number): Promise<string | undefined> {
    const work = async (tx: Pick<PoolClient, 'query'>): Promise<KeyRotation | undefined> => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [KEY_LOCK]);
      const { rowCount } = await tx.query(
        `SELECT 1 FROM signing_keys a
          WHERE a.status = 'active'
            AND greatest(a.created_at, (SELECT max(r.retiring_since) FROM signing_keys r)) < now() - make_interval(days => $1)`,
        [days],
      );
      return rowCount ? this.promoteNext(tx) : undefined;
    };
    const rotation = await this.commitChange(work, (done) =>
      done
        ? [
            {
              type: 'key.rotated',
              outcome: 'success',
              actor: MAINTENANCE_ACTOR,
              data: { kid: done.kid, previous_kid: done.previousKid, reason: 'scheduled', rotation_days: days },
            },
          ]
        : [],
    );
    if (rotation) await this.reload();
    return rotation?.kid;
  }

  /**
   * Commits a change the store makes on its own with its audit events (see
   * {@link recordChangesWith}), or alone in a transaction when no audited transaction was given.
   */
  private commitChange<T>(work: (tx: PoolClient) => Promise<T>, events: (result: T) => KeyEvent[]): Promise<T> {
    return this.audited ? this.audited.run(work, events) : this.transaction(work);
  }

  /** Runs `work` in a transaction of its own. */
  private async transaction<T>(work: (tx: PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const release = watchCheckedOut(client);
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      release();
    }
  }

  private maintenance: NodeJS.Timeout | undefined;

  /**
   * Background key upkeep of a service: re-reads the keys every `refreshMs` (a rotation made
   * on any instance signs and verifies everywhere within that delay), rotates on schedule and
   * retires keys that no token can need any more. Ticks never overlap; errors are reported and
   * retried at the next tick.
   */
  startMaintenance(options: KeyMaintenanceOptions): void {
    if (this.maintenance) return;
    let running = false;
    let lastUpkeep = 0;
    this.maintenance = setInterval(() => {
      if (running) return;
      running = true;
      void (async () => {
        try {
          await this.reload();
          // Rotation and retirement are rarer: once a minute is plenty.
          if (Date.now() - lastUpkeep >= 60_000) {
            lastUpkeep = Date.now();
            const rotated = options.rotationDays > 0 ? await this.rotateIfOlderThan(options.rotationDays) : undefined;
            const retired = await this.retireOlderThan(LONGEST_TOKEN_LIFETIME_SECONDS);
            if (rotated || retired) options.onChange?.({ rotated, retired });
          }
        } catch (error) {
          options.onError?.(error);
        } finally {
          running = false;
        }
      })();
    }, options.refreshMs);
    this.maintenance.unref();
  }

  /** Stops {@link startMaintenance}. */
  stopMaintenance(): void {
    clearInterval(this.maintenance);
    this.maintenance = undefined;
  }

  /**
   * Re-reads the keys soon (a change was notified): after the read in flight, if any, since it
   * may have started before the change committed. Never throws; the periodic refresh retries.
   */
  reloadSoon(): void {
    this.reload().catch(() => undefined);
  }

  /**
   * Re-reads the keys from PostgreSQL (other instances may have rotated). What it resolves with
   * was read after the call: a read already in flight may have started before what the caller
   * wants to see (its own rotation, committed a moment ago, or the key of a token it was shown),
   * so the call waits for it and reads again, one read for all the callers that waited.
   */
  reload(): Promise<void> {
    if (!this.reloading) return this.read();
    const after = (): Promise<void> => {
      this.rereading = undefined;
      // A read started since the one in flight ended started after this call, too.
      return this.reloading ?? this.read();
    };
    return (this.rereading ??= this.reloading.then(after, after));
  }

  /** One read of the keys (see {@link reload}). */
  private read(): Promise<void> {
    const started = (this.lastReload = Date.now());
    this.reloading = (async () => {
      const { rows } = await this.pool.query<KeyRow>(
        `SELECT kid, private_sealed, status, created_at FROM signing_keys
          WHERE status IN ('next', 'active', 'retiring') ORDER BY created_at`,
      );
      const next = new Map<string, LoadedKey>();
      for (const row of rows) {
        const cached = this.keys.get(row.kid);
        if (cached) {
          next.set(row.kid, { ...cached, status: row.status });
          continue;
        }
        const privateJwk = JSON.parse(this.master.unseal(row.private_sealed, `signing_key:${row.kid}`).toString('utf8')) as JWK;
        // The public half is the sealed private key's own (sealed bound to its kid), never the
        // row's `public_jwk`: nothing seals that column, and a DBA's key in it would be trusted.
        const publicJwk = publicHalf(privateJwk, row.kid);
        next.set(row.kid, {
          kid: row.kid,
          status: row.status,
          publicJwk,
          publicKey: (await importJWK(publicJwk, SIGNING_ALG)) as CryptoKey,
          privateKey: (await importJWK(privateJwk, SIGNING_ALG)) as CryptoKey,
          privateKeyObject: createPrivateKey({ key: privateJwk as JsonWebKey, format: 'jwk' }),
          createdAt: row.created_at,
        });
      }
      this.keys = next;
      this.active = [...next.values()].find((key) => key.status === 'active');
    })()
      .then(
        () => {
          this.reloadFailing = false;
          this.loadedAt = started;
        },
        (error: unknown) => {
          this.reloadFailing = true;
          throw error;
        },
      )
      .finally(() => {
        this.reloading = undefined;
      });
    return this.reloading;
  }

  /** The public JWKS: the active, next and retiring keys, each with `kid`, `alg` and `use`. */
  jwks(): { keys: PublicSigningKey[] } {
    return { keys: [...this.keys.values()].map((key) => ({ ...key.publicJwk })) };
  }

  /**
   * True while this instance's reads of the keys fail and the last one that succeeded is older
   * than {@link STALE_KEYS_SIGNING_LIMIT_MS}: it signs nothing then (see {@link sign}).
   */
  stale(): boolean {
    return this.reloadFailing && Date.now() - this.loadedAt > STALE_KEYS_SIGNING_LIMIT_MS;
  }

  /** The kid of the active key. */
  activeKid(): string {
    if (!this.active) throw noActiveKey();
    return this.active.kid;
  }

  /**
   * Signs claims with the active key; `iss` is always this issuer. Returns the token with the
   * kid of the key that signed it (its header's `kid`), the one to record.
   *
   * The compact JWS is assembled here rather than by jose's `SignJWT`, which signs through
   * WebCrypto on this process's only JavaScript thread (about 25 µs of it per token, a large
   * item of the token endpoint's profile); `node:crypto` signs on libuv's thread pool (its
   * callback form) or, where no core is free for the pool, synchronously (`WRIT_ECDSA`). What
   * is assembled is what `SignJWT` would produce: base64url of the JSON header and claims, and
   * the raw `r || s` ES256 signature (RFC 7518 §3.4). Tokens are verified by jose.
   *
   * Throws `TemporarilyUnavailableError` (`503`) when no key is loaded, or when the keys could
   * not be read for longer than {@link STALE_KEYS_SIGNING_LIMIT_MS}.
   */
  async sign(claims: JWTPayload, header: { typ: string } & Partial<JWTHeaderParameters>): Promise<SignedToken> {
    const key = this.active;
    if (!key) throw noActiveKey();
    if (this.stale()) {
      // The key last read as active may have been rotated out since, and will be retired on
      // schedule whatever this instance signs with it: refuse rather than sign tokens that the
      // other instances would stop accepting before they expire. Read again, at most this often.
      if (Date.now() - this.lastReload > RELOAD_THROTTLE_MS) this.reloadSoon();
      throw new TemporarilyUnavailableError('the signing keys could not be read for too long; retry later');
    }
    const encodedHeader = Buffer.from(JSON.stringify({ ...header, alg: SIGNING_ALG, kid: key.kid })).toString('base64url');
    const encodedClaims = Buffer.from(JSON.stringify({ ...claims, iss: this.issuer })).toString('base64url');
    const signingInput = `${encodedHeader}.${encodedClaims}`;
    const input = Buffer.from(signingInput, 'ascii');
    const options = { key: key.privateKeyObject, dsaEncoding: 'ieee-p1363' as const };
    const signature = this.signOnThreadPool
      ? await new Promise<Buffer>((resolve, reject) => cryptoSign('sha256', input, options, (error, result) => (error ? reject(error) : resolve(result))))
      : cryptoSign('sha256', input, options);
    return { token: `${signingInput}.${signature.toString('base64url')}`, kid: key.kid };
  }

  /**
   * Verifies a token this issuer signed: signature, `alg`, `typ`, `iss`, `exp`, and `aud`. A
   * token that verified before under the same options is not verified again: its `exp`,
   * `nbf` and signing key are re-checked (see {@link VerifiedTokenCache}). Throws
   * {@link TokenVerificationError} for a token that is not valid, and `TemporarilyUnavailableError`
   * when it names a key this instance cannot read right now (callers answer 503, not 401).
   */
  async verify(token: string, options: VerifyOptions): Promise<JWTVerifyResult> {
    const tolerance = options.clockTolerance ?? 0;
    // A frozen clock (tests, revocation of expired tokens) always takes the full path.
    const cacheKey = options.currentDate ? undefined : `${options.typ}\u0000${JSON.stringify(options.audience ?? null)}\u0000${tolerance}\u0000${token}`;
    if (cacheKey) {
      const hit = this.verified.get(cacheKey, Math.floor(Date.now() / 1000), tolerance, (kid) => this.keys.has(kid));
      if (hit) return hit;
    }
    try {
      const result = await jwtVerify(token, async (header) => this.publicKeyFor(header.kid), {
        algorithms: [SIGNING_ALG],
        issuer: this.issuer,
        typ: options.typ,
        audience: options.audience,
        clockTolerance: tolerance,
        currentDate: options.currentDate,
        requiredClaims: ['exp', 'jti', 'iat'],
      });
      if (!cacheKey) return result;
      this.verified.set(cacheKey, result);
      return this.verified.get(cacheKey, Math.floor(Date.now() / 1000), tolerance, () => true) ?? result;
    } catch (error) {
      if (error instanceof TokenVerificationError || error instanceof TemporarilyUnavailableError) throw error;
      const code = (error as { code?: string }).code ?? 'ERR_JWT_INVALID';
      throw new TokenVerificationError(code, verificationMessage(code));
    }
  }

  private async publicKeyFor(kid: string | undefined): Promise<CryptoKey> {
    if (!kid) throw new TokenVerificationError('ERR_JWKS_NO_MATCHING_KEY', 'token has no kid');
    let key = this.keys.get(kid);
    if (!key && Date.now() - this.lastReload > RELOAD_THROTTLE_MS) {
      await this.reload().catch(() => undefined);
      key = this.keys.get(kid);
    }
    // Keys that cannot be read say nothing of the token: unavailable (503), never invalid.
    if (!key && this.reloadFailing) throw new TemporarilyUnavailableError('the signing keys cannot be read right now; retry later');
    if (!key) throw new TokenVerificationError('ERR_JWKS_NO_MATCHING_KEY', 'token was not signed by a key of this issuer');
    return key.publicKey;
  }

  /**
   * In a transaction holding the key lock: the active key starts retiring, the published
   * `next` key becomes active (a fresh one if there is none), and a new `next` is published.
   * Returns the new active kid and the one it retired (as read by the retiring statement).
   */
  private async promoteNext(client: Pick<PoolClient, 'query'>): Promise<KeyRotation> {
    const retired = await client.query<{ kid: string }>(
      `UPDATE signing_keys SET status = 'retiring', retiring_since = now() WHERE status = 'active' RETURNING kid`,
    );
    const promoted = await client.query<{ kid: string }>(`UPDATE signing_keys SET status = 'active' WHERE status = 'next' RETURNING kid`);
    const kid = promoted.rows[0]?.kid ?? (await this.insertNewKey(client, 'active'));
    await this.insertNewKey(client, 'next');
    return { kid, previousKid: retired.rows[0]?.kid ?? null };
  }

  private async insertNewKey(client: { query: Pool['query'] }, status: 'active' | 'next'): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const privateJwk = await exportJWK(privateKey);
    const sealed = this.master.seal(JSON.stringify(privateJwk), `signing_key:${kid}`);
    await client.query(`INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, status, created_at) VALUES ($1, $2, $3, $4, $5, now())`, [
      kid,
      SIGNING_ALG,
      { ...publicJwk, kid, alg: SIGNING_ALG, use: 'sig' },
      sealed,
      status,
    ]);
    return kid;
  }
}

/** The published form of an EC private JWK's public half (`kty`, `crv`, `x`, `y`), named `kid`. */
function publicHalf(privateJwk: JWK, kid: string): PublicSigningKey {
  return { kty: privateJwk.kty, crv: privateJwk.crv, x: privateJwk.x, y: privateJwk.y, kid, alg: SIGNING_ALG, use: 'sig' };
}

function verificationMessage(code: string): string {
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'token has expired';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'token signature is invalid';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return 'token claims are not valid for this use';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'token algorithm is not allowed';
    default:
      return 'token is malformed or not issued by this authority';
  }
}

/**
 * A token id: a UUIDv7 (RFC 9562), 74 random bits after the millisecond it was made. Credentials
 * are recorded under their id (`access_tokens`' primary key): ids that grow with time insert at
 * the right edge of that index, so an insert touches the same few pages however many credentials
 * the table holds, where random (v4) ids touch a random leaf each, which after every checkpoint
 * costs a full-page image in the WAL and, once the index outgrows memory, a read.
 */
export function newJti(): string {
  return uuidv7();
}

/**
 * No active signing key is loaded (e.g. between a failed reload and the next): nothing can be
 * signed now, the service is not broken. A `503` with `Retry-After`, never a `500`.
 */
function noActiveKey(): TemporarilyUnavailableError {
  return new TemporarilyUnavailableError('no signing key is available right now; retry later');
}
