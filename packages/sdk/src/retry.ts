/** How many times an overloaded (429) or unavailable (503) answer is retried before it is returned. */
export const MAX_RETRIES = 3;
/** The longest wait for one retry: a longer `Retry-After` is returned to the caller instead of slept on. */
export const MAX_RETRY_WAIT_MS = 30_000;
const DEFAULT_WAIT_MS = 1000;

/** Methods RFC 9110 §9.2.2 calls idempotent: only those gateway calls are retried (a POST may have been forwarded). */
export const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * The `Retry-After` of an answer in milliseconds (RFC 9110 §10.2.3: delay-seconds or an
 * HTTP-date, read against the answer's own `Date` so that a skewed local clock does not
 * matter), or undefined when absent or unreadable.
 */
export function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  const serverNow = Date.parse(headers.get('date') ?? '');
  return Math.max(0, at - (Number.isNaN(serverNow) ? Date.now() : serverNow));
}

/**
 * How long to wait before retrying `response`, or undefined when it must not be retried:
 * only 429 and 503 are, at most {@link MAX_RETRIES} times, never sooner than `Retry-After`
 * (plus up to 20 % jitter so that many agents do not come back at once), and not at all
 * when the server asks for more than {@link MAX_RETRY_WAIT_MS}. 400, 401 and 403 are answers,
 * never retried here.
 */
export function retryDelayMs(response: Response, attempt: number, random: () => number = Math.random): number | undefined {
  if (response.status !== 429 && response.status !== 503) return undefined;
  if (attempt >= MAX_RETRIES) return undefined;
  const asked = retryAfterMs(response.headers);
  const base = asked ?? DEFAULT_WAIT_MS * 2 ** attempt;
  if (base > MAX_RETRY_WAIT_MS) return undefined;
  return Math.min(MAX_RETRY_WAIT_MS, base + Math.floor(random() * Math.max(100, base * 0.2)));
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Sends `send()` again while the answer is a retryable 429/503 (see {@link retryDelayMs}),
 * discarding each refused answer's body. Returns the last answer.
 */
export async function withRetries(send: () => Promise<Response>, signal?: AbortSignal): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    const response = await send();
    const delay = retryDelayMs(response, attempt);
    if (delay === undefined) return response;
    await response.body?.cancel().catch(() => undefined);
    await sleep(delay, signal);
  }
}
