import { randomInt } from 'node:crypto';
import { createServer } from 'node:net';

/**
 * Ports a test may listen on: below Linux's ephemeral range (32768–60999). A port the kernel
 * handed out with `listen(0)` comes from that range, so between this check and the service's
 * own `listen` any outgoing connection of the parallel suites (PostgreSQL clients, HTTP
 * clients) could take it, which failed suites with `EADDRINUSE` now and then.
 */
const FIRST = 20_000;
const LAST = 32_000;

/** A loopback port that was free a moment ago, outside the ephemeral range. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = randomInt(FIRST, LAST);
    if (await bindable(port)) return port;
  }
  throw new Error(`no free loopback port found between ${FIRST} and ${LAST}`);
}

/** `count` distinct loopback ports, each free a moment ago, outside the ephemeral range. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
