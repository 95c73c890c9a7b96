import { clientAuthFields, ClientKey } from '@writ/testing';

/** A JSON HTTP response as tests read it. */
export interface TestResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

/** Sends a request and reads the body as JSON when it is JSON. */
export async function http<T = any>(url: string, init: RequestInit = {}): Promise<TestResponse<T>> {
  const response = await fetch(url, init);
  const text = await response.text();
  let body: any = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  return { status: response.status, headers: response.headers, body, text };
}

/** POSTs a form (application/x-www-form-urlencoded). */
export function postForm<T = any>(url: string, fields: Record<string, string> | string, headers: Record<string, string> = {}): Promise<TestResponse<T>> {
  return http<T>(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: typeof fields === 'string' ? fields : new URLSearchParams(fields).toString(),
  });
}

/** Sends JSON with an optional bearer token. */
export function sendJson<T = any>(method: string, url: string, body?: unknown, token?: string): Promise<TestResponse<T>> {
  return http<T>(url, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
}

/** A registered client the tests act as: its id and key. */
export interface TestClient {
  id: string;
  key: ClientKey;
}

/** `POST /oauth2/token` authenticated with a fresh client assertion. */
export async function tokenRequest<T = any>(issuer: string, client: TestClient, fields: Record<string, string>): Promise<TestResponse<T>> {
  return postForm<T>(`${issuer}/oauth2/token`, { ...fields, ...(await clientAuthFields(client.id, client.key, issuer)) });
}
