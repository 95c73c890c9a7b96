import { Pool } from 'undici';
import { LatencyHistogram } from './histogram';

/** What one load phase measured; latencies in milliseconds with microsecond resolution. */
export interface LoadResult {
  /** Completed requests per second of the phase's wall time. */
  requestsPerSecond: number;
  /** The rate the phase was scheduled at (open loop), or null (closed loop, as fast as possible). */
  targetRate: number | null;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  requests: number;
  non2xx: number;
  errors: number;
  /** Requests that could not be sent on time because every connection was busy (open loop). */
  late: number;
}

/** One request of a phase. */
export interface LoadTarget {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  /** A fresh body per request (e.g. a unique client assertion), prepared before the run; null = out of bodies. */
  nextBody?: () => string | null;
  /** Headers per request (e.g. credentials of many tasks in turn), added to `headers`. */
  nextHeaders?: () => Record<string, string>;
}

/** Bounds shared by both kinds of phase: every phase ends by time and by count. */
export interface PhaseBounds {
  seconds: number;
  maxRequests?: number;
  connections?: number;
}

const nowUs = (): number => Number(process.hrtime.bigint()) / 1000;

function summarise(
  histogram: LatencyHistogram,
  elapsedUs: number,
  targetRate: number | null,
  counters: { non2xx: number; errors: number; late: number },
): LoadResult {
  return {
    requestsPerSecond: histogram.count / (elapsedUs / 1e6),
    targetRate,
    p50Ms: histogram.percentileUs(50) / 1000,
    p90Ms: histogram.percentileUs(90) / 1000,
    p99Ms: histogram.percentileUs(99) / 1000,
    maxMs: histogram.max / 1000,
    requests: histogram.count,
    ...counters,
  };
}

async function send(pool: Pool, target: LoadTarget, path: string, body: string | undefined): Promise<number> {
  const headers = target.nextHeaders ? { ...target.headers, ...target.nextHeaders() } : target.headers;
  const response = await pool.request({ path, method: target.method ?? 'GET', headers, body });
  // Drain the body so that the connection is reused.
  await response.body.dump({ limit: 1 << 20 });
  return response.statusCode;
}

function poolFor(target: LoadTarget, connections: number): { pool: Pool; path: string } {
  const url = new URL(target.url);
  if (url.hostname !== '127.0.0.1' && url.hostname !== 'localhost') throw new Error(`the bench loads loopback only, not ${url.hostname}`);
  return { pool: new Pool(url.origin, { connections, pipelining: 1, keepAliveTimeout: 30_000 }), path: url.pathname + url.search };
}

/**
 * Open loop: requests are scheduled at a constant rate, whatever the server's latency, and
 * each latency is measured from the request's scheduled time (no coordinated omission: a
 * server that stalls is charged for every request that should have been sent meanwhile).
 */
export async function runOpenLoop(target: LoadTarget, rate: number, bounds: PhaseBounds): Promise<LoadResult> {
  const { pool, path } = poolFor(target, bounds.connections ?? 64);
  const histogram = new LatencyHistogram();
  const counters = { non2xx: 0, errors: 0, late: 0 };
  const intervalUs = 1e6 / rate;
  const total = Math.min(bounds.maxRequests ?? Infinity, Math.floor(rate * bounds.seconds));
  const inFlight = new Set<Promise<void>>();
  const started = nowUs();
  let sent = 0;
  try {
    while (sent < total) {
      const due = started + sent * intervalUs;
      const wait = due - nowUs();
      // Timers have millisecond resolution: sleep, then send everything that fell due.
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.floor(wait / 1000))));
      // Send everything that is due (a timer that fired late catches up at once).
      while (sent < total && started + sent * intervalUs <= nowUs()) {
        const scheduled = started + sent * intervalUs;
        sent += 1;
        const body = target.nextBody?.();
        if (body === null) {
          sent = total;
          break;
        }
        if (inFlight.size >= (bounds.connections ?? 64)) counters.late += 1;
        const request: Promise<void> = send(pool, target, path, body)
          .then(
            (status) => {
              histogram.record(nowUs() - scheduled);
              if (status < 200 || status >= 300) counters.non2xx += 1;
            },
            () => {
              counters.errors += 1;
            },
          )
          .finally(() => inFlight.delete(request));
        inFlight.add(request);
      }
    }
    await Promise.all(inFlight);
    return summarise(histogram, nowUs() - started, rate, counters);
  } finally {
    await pool.close();
  }
}

/** Closed loop: `connections` workers each send their next request as soon as the last returns (maximum throughput). */
export async function runClosedLoop(target: LoadTarget, bounds: PhaseBounds): Promise<LoadResult> {
  const connections = bounds.connections ?? 32;
  const { pool, path } = poolFor(target, connections);
  const histogram = new LatencyHistogram();
  const counters = { non2xx: 0, errors: 0, late: 0 };
  const started = nowUs();
  const until = started + bounds.seconds * 1e6;
  const limit = bounds.maxRequests ?? Infinity;
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (nowUs() < until && sent < limit) {
      const body = target.nextBody?.();
      if (body === null) return;
      sent += 1;
      const begin = nowUs();
      try {
        const status = await send(pool, target, path, body);
        histogram.record(nowUs() - begin);
        if (status < 200 || status >= 300) counters.non2xx += 1;
      } catch {
        counters.errors += 1;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: connections }, worker));
    return summarise(histogram, nowUs() - started, null, counters);
  } finally {
    await pool.close();
  }
}
