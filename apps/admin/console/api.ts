/**
 * The console's only way to the server: the public admin API on this origin, with the admin
 * token as a Bearer header. The token lives in this module's memory only (never
 * localStorage, sessionStorage or a cookie): a reload or a closed tab signs out, and no
 * ambient credential exists for another site to ride on.
 */

/** A field error of the admin API's 400 answers. */
export interface FieldError {
  field: string;
  message: string;
}

/** A refused API call, with the API's message and field errors. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly fields: FieldError[] = [],
    readonly body: unknown = undefined,
  ) {
    super(message);
  }
}

/** The admin roles, least powerful first. */
export type Role = 'viewer' | 'operator' | 'admin';
const ROLES: Role[] = ['viewer', 'operator', 'admin'];

/** True when `held` may do what `required` may. */
export function roleAtLeast(held: Role, required: Role): boolean {
  return ROLES.indexOf(held) >= ROLES.indexOf(required);
}

let token: string | null = null;
let onUnauthorized: () => void = () => undefined;

/** Keeps the token for the following calls (null signs out). */
export function setToken(value: string | null): void {
  token = value;
}

/** Called when the API answers 401 (token expired or revoked meanwhile): the console asks for a token again, keeping the page. */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

/** A page of a list. */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** Options of {@link api}. */
export interface ApiOptions {
  /** A raw body (a policy bundle) and its content type, instead of JSON. */
  raw?: { body: Blob | ArrayBuffer; type: string };
  /** Do not sign out on 401 (the sign-in check itself). */
  quiet401?: boolean;
  /** Sent as `If-Match`: the change applies only to the version read (`412` otherwise). */
  ifMatch?: string;
  /** Told the answer's `ETag`, if any (the version to send back as `ifMatch`). */
  onEntityTag?: (tag: string | undefined) => void;
  /**
   * Sent as `Idempotency-Key` on a create: the same key for every attempt of one intended create
   * (a double click, a retry after an outage or a lost answer), so that the API creates it once
   * and answers the others with the first answer (`Idempotent-Replayed: true`).
   */
  idempotencyKey?: string;
  /** Told whether the answer is a replay of an earlier attempt's (`Idempotent-Replayed: true`). */
  onReplayed?: (replayed: boolean) => void;
}

/**
 * A fresh `Idempotency-Key`: 128 random bits in hex. From `getRandomValues`, which every browser
 * offers, where `crypto.randomUUID` exists only in a secure context (a console reached over plain
 * HTTP on another host than localhost would have none).
 */
export function newIdempotencyKey(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** Calls the admin API; resolves with the JSON answer (undefined for 204) or throws {@link ApiError}. */
export async function api<T = unknown>(method: string, path: string, body?: unknown, options: ApiOptions = {}): Promise<T> {
  // The token this call is sent with: its 401 ends that session, not one signed in meanwhile (a
  // poll sent before signing in again answers after it, and must not sign the new token out).
  const sent = token;
  // Signed out, or the session ended (a 401): nothing is sent. The page under the "Session ended"
  // dialog keeps polling, and each tokenless request would count as a failed authentication of
  // the admin's address: about 85 a minute, past the throttle's 20, so that the admin (and every
  // admin behind the same address) would get 429 on signing in again.
  if (!sent) throw new ApiError(401, 'signed out: sign in to carry on');
  const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${sent}` };
  if (options.ifMatch) headers['if-match'] = options.ifMatch;
  if (options.idempotencyKey) headers['idempotency-key'] = options.idempotencyKey;
  let payload: BodyInit | undefined;
  if (options.raw) {
    headers['content-type'] = options.raw.type;
    payload = options.raw.body;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: 'omit', cache: 'no-store', redirect: 'error' });
  } catch {
    throw new ApiError(0, 'the admin API cannot be reached');
  }
  const text = await response.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (response.ok) {
    options.onEntityTag?.(response.headers.get('etag') ?? undefined);
    options.onReplayed?.(response.headers.get('idempotent-replayed') === 'true');
    return json as T;
  }
  if (response.status === 401 && !options.quiet401 && token === sent) onUnauthorized();
  const error = (json ?? {}) as { message?: string; error_description?: string; error?: string; fields?: FieldError[] };
  const message = error.message ?? error.error_description ?? error.error ?? `HTTP ${response.status}`;
  throw new ApiError(response.status, `${message}${retryHint(response)}`, Array.isArray(error.fields) ? error.fields : [], json);
}

/**
 * When to try again, from a 503 or 429's `Retry-After` (seconds or an HTTP date): the API says
 * how long it needs, and an admin told only "unavailable" retries at once, or gives up.
 */
function retryHint(response: Response): string {
  if (response.status !== 503 && response.status !== 429) return '';
  const value = response.headers.get('retry-after')?.trim();
  if (!value) return '';
  const seconds = /^\d+$/.test(value) ? Number(value) : Math.ceil((Date.parse(value) - Date.now()) / 1000);
  if (!Number.isFinite(seconds)) return '';
  return seconds > 0 ? ` (HTTP ${response.status}: try again in ${seconds} s)` : ` (HTTP ${response.status}: try again now)`;
}

/**
 * One path segment of an API URL, from a value the page did not choose itself (an id in the
 * location hash, or in an API answer): percent-encoded, so that `/`, `?` and `#` stay inside it,
 * and never `.` or `..`, which the browser would resolve, so that a link such as
 * `#/audit?task_id=../audit/verify?` could aim the console's polling at another endpoint.
 */
export function segment(value: string): string {
  if (value === '' || value === '.' || value === '..') throw new ApiError(0, `not a valid id: "${value}"`);
  return encodeURIComponent(value);
}

/** Builds a query string from the defined, non-empty members. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** Offers `data` as a JSON file download (built in memory: the token never goes in a URL). */
export function downloadJson(filename: string, data: unknown): void {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2) + '\n'], { type: 'application/json' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
