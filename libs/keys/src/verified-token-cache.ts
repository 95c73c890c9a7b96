import type { JWTVerifyResult } from 'jose';

/** One verification remembered: its result and what must still hold when it is reused. */
interface Entry {
  result: JWTVerifyResult;
  kid: string;
  exp: number;
  nbf: number | undefined;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value as Record<string, unknown>)) deepFreeze(member);
  }
  return value;
}

/**
 * Remembers tokens whose signature and claims were verified, so that a token presented again
 * (an agent's task token on each exchange, a credential on each proxied call) costs a map
 * lookup instead of an ECDSA verification (about 120 µs of the main thread each). Only the
 * exact bytes that verified are remembered, under the options they verified with; a reuse
 * re-checks what time or key changes can undo: `exp` and `nbf` against the clock, and that
 * the signing key is still one of the issuer's (a retired key's tokens stop verifying at the
 * reload that drops it, which every instance makes as soon as the retirement is notified; keys
 * are retired, never revoked, and only once every token they signed has expired). Revocation is not a property of the token and is checked
 * where the token is spent, as before. Bounded: the oldest entry goes first.
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly maxEntries = 10_000) {}

  /** The remembered result for this key, if its token is still within its times and its key still known. */
  get(key: string, nowSeconds: number, toleranceSeconds: number, keyKnown: (kid: string) => boolean): JWTVerifyResult | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.exp <= nowSeconds - toleranceSeconds || !keyKnown(entry.kid)) {
      this.entries.delete(key);
      return undefined;
    }
    if (entry.nbf !== undefined && entry.nbf > nowSeconds + toleranceSeconds) return undefined;
    return entry.result;
  }

  /** Remembers a verified token; its result is frozen (callers share it). Tokens without `exp` or `kid` are not kept. */
  set(key: string, result: JWTVerifyResult): void {
    const { exp, nbf } = result.payload;
    const kid = result.protectedHeader.kid;
    if (typeof exp !== 'number' || typeof kid !== 'string') return;
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, {
      result: deepFreeze({ payload: result.payload, protectedHeader: result.protectedHeader }),
      kid,
      exp,
      nbf: typeof nbf === 'number' ? nbf : undefined,
    });
  }

  /** How many tokens are remembered. */
  get size(): number {
    return this.entries.size;
  }
}
