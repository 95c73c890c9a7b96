import type { Server } from 'node:http';
import { AddressInfo, connect, Socket } from 'node:net';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { eventually } from '../support/eventually';
import { startTestServices, TestServices } from '../support/test-services';

jest.setTimeout(120_000);

/** The in-flight limit of these services: a handful of pinned requests would be all of it. */
const MAX_IN_FLIGHT = 4;
/** How long a connection may leave its answers unread before it is cut (shortened for the test). */
const SEND_TIMEOUT_MS = 1500;

/**
 * One connection that pipelines `count` copies of `request` and never reads a byte of the
 * answers: its receive window closes, the server's send buffer fills, and every answer after
 * that waits in the server. Resolves once the server has stopped taking the requests (or all
 * were written).
 */
async function pipelineWithoutReading(url: string, request: string, count: number): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  // Never read: what the server sends stays in the kernel's buffers until they are full.
  socket.pause();
  const batch = request.repeat(100);
  for (let sent = 0; sent < count; sent += 100) {
    if (!socket.write(batch)) {
      // The server stopped reading (it pauses a connection whose answers are not taken).
      const drained = await Promise.race([
        new Promise<boolean>((resolve) => socket.once('drain', () => resolve(true))),
        // Unref'd: a timer left running past the suite would keep jest waiting.
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1000).unref()),
      ]);
      if (!drained) break;
    }
  }
  return socket;
}

/** The statuses of `attempts` requests, one after the other, each on a connection of its own. */
async function statuses(url: string, attempts: number): Promise<number[]> {
  const seen: number[] = [];
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    const response = await fetch(url, { headers: { connection: 'close' } });
    await response.arrayBuffer();
    seen.push(response.status);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return seen;
}

describe('faults: answers a caller never reads hold no in-flight slot', () => {
  let services: TestServices;

  beforeAll(async () => {
    // The default send deadline (30 s): what is shown here does not wait for it.
    services = await startTestServices({ env: { WRIT_MAX_IN_FLIGHT: String(MAX_IN_FLIGHT) } });
  });
  afterAll(async () => {
    await services?.close();
  });

  it('serves everyone else while one connection pipelines thousands of requests it never reads', async () => {
    // Cheap, unauthenticated, admitted requests (not probes, which are never counted).
    const discovery = `GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: ${new URL(services.authUrl).host}\r\nX-Request-Id: ${'r'.repeat(128)}\r\n\r\n`;
    const attackers = await Promise.all([0, 1].map(() => pipelineWithoutReading(services.authUrl, discovery, 20_000)));
    try {
      // Until the attacker's answers have filled the buffers between it and the service.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      // The attacker's answers are ended (only not read): they are no work, everyone else is served.
      expect(await statuses(`${services.authUrl}/.well-known/oauth-authorization-server`, 5)).toEqual([200, 200, 200, 200, 200]);
    } finally {
      for (const socket of attackers) socket.destroy();
    }
  });
});

describe('faults: connections whose answers stay unread are cut', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
      // Long request deadlines: a connection paused in the middle of a pipelined request is not cut by them here.
      env: { WRIT_HTTP_SEND_TIMEOUT_MS: String(SEND_TIMEOUT_MS), WRIT_HTTP_HEADERS_TIMEOUT_MS: '60000', WRIT_HTTP_REQUEST_TIMEOUT_MS: '60000' },
    });
  });
  afterAll(async () => {
    await services?.close();
  });

  it('cuts a connection whose answers stay unread past WRIT_HTTP_SEND_TIMEOUT_MS, on every service', async () => {
    // [app index, path]: the authorization server, the gateway and the admin API (a large document).
    const targets: Array<[number, string]> = [
      [0, '/.well-known/oauth-authorization-server'],
      [1, '/.well-known/oauth-protected-resource/connectors/payments'],
      [2, '/docs-json'],
    ];
    for (const [index, path] of targets) {
      const server = services.apps[index].getHttpServer() as Server;
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const connections = () => new Promise<number>((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
      const socket = await pipelineWithoutReading(
        url,
        `GET ${path} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nX-Request-Id: ${'r'.repeat(128)}\r\n\r\n`,
        10_000,
      );
      try {
        expect(await connections()).toBe(1);
        // Once the service has answered what it read (a few seconds for thousands of requests) and the deadline has passed.
        const left = await eventually(connections, (count) => count === 0, 20_000);
        expect({ path, left }).toEqual({ path, left: 0 });
      } finally {
        socket.destroy();
      }
    }
  });

  it('keeps a connection whose answer is still being worked on, however long that takes', async () => {
    // A reading caller whose request takes longer than the send deadline is answered in full.
    const { hostname, port } = new URL(services.authUrl);
    const socket = connect(Number(port), hostname);
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // Headers now, the body later (within the request timeout): the server waits for it.
    const body = 'grant_type=client_credentials';
    socket.write(
      `POST /oauth2/token HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    await new Promise((resolve) => setTimeout(resolve, SEND_TIMEOUT_MS + 1500));
    socket.write(body);
    const answered = await Promise.race([
      new Promise<boolean>((resolve) => socket.on('data', () => received.includes('\r\n\r\n') && resolve(true))),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000).unref()),
    ]);
    socket.destroy();
    expect(answered).toBe(true);
    expect(received).toMatch(/^HTTP\/1\.1 (400|401) /);
  });
});
