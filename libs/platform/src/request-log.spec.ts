import { createServer, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { requestIdOf } from './http-app';
import { createLogger } from './logger';
import { requestLog } from './request-log';

async function serve(level: 'info' | 'warn' | 'silent', lines: string[], status: number): Promise<Server> {
  const middleware = requestLog(createLogger(level, 'writ', { write: (line: string) => lines.push(line) }), requestIdOf);
  const server = createServer((req, res) => middleware(req, res, () => res.writeHead(status).end('ok')));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function call(server: Server, path: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`, { headers: { authorization: 'Bearer sk_secret_value', ...headers } });
}

const settled = () => new Promise((resolve) => setTimeout(resolve, 20));

describe('requestLog', () => {
  it('logs one line per request, without the query or any header, with the request id it sends', async () => {
    const lines: string[] = [];
    const server = await serve('info', lines, 200);
    const response = await call(server, '/oauth2/token?code=secret-code');
    await settled();
    server.close();
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]);
    expect(line).toMatchObject({
      level: 30,
      msg: 'request completed',
      req: { method: 'GET', path: '/oauth2/token', id: response.headers.get('x-request-id') },
      res: { status: 200 },
    });
    expect(lines[0]).not.toContain('secret');
  });

  it("keeps the caller's well-formed X-Request-Id and replaces a malformed one", async () => {
    const lines: string[] = [];
    const server = await serve('info', lines, 200);
    const kept = await call(server, '/a', { 'x-request-id': 'caller-id.1' });
    const replaced = await call(server, '/b', { 'x-request-id': 'bad id\u00e9' });
    await settled();
    server.close();
    expect(kept.headers.get('x-request-id')).toBe('caller-id.1');
    expect(replaced.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(lines[0]).req.id).toBe('caller-id.1');
  });

  it('logs a 5xx at error and a 503 at warn when info is off, and nothing else', async () => {
    const lines: string[] = [];
    const failing = await serve('warn', lines, 500);
    await call(failing, '/x');
    await settled();
    const unavailable = await serve('warn', lines, 503);
    await call(unavailable, '/y');
    await settled();
    const fine = await serve('warn', lines, 200);
    await call(fine, '/z');
    await settled();
    failing.close();
    unavailable.close();
    fine.close();
    expect(lines.map((line) => JSON.parse(line).level)).toEqual([50, 40]);
  });

  it('still sends a request id when silent', async () => {
    const lines: string[] = [];
    const server = await serve('silent', lines, 200);
    const response = await call(server, '/z');
    server.close();
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(lines).toEqual([]);
  });
});
