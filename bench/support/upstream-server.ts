import { createServer } from 'node:http';
import { BENCH_UPSTREAM_SECRET } from './bench-constants';

/** A minimal upstream API for the gateway benchmark, in its own process: one JSON read. */
const body = JSON.stringify({ available: 1_000_000, currency: 'usd' });
const server = createServer((request, response) => {
  if (request.headers.authorization !== `Bearer ${BENCH_UPSTREAM_SECRET}`) {
    response.writeHead(401).end();
    return;
  }
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  response.end(body);
});
server.keepAliveTimeout = 30_000;
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.send!({ url: `http://127.0.0.1:${process.argv[2]}` }));
process.on('message', (message) => {
  if (message === 'stop') {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  }
});
