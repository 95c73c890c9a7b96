import autocannon from 'autocannon';

/** What one load run measured. */
export interface LoadResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  non2xx: number;
  errors: number;
}

/** Options of {@link runLoad}. */
export interface LoadOptions {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  /** A fresh body per request (e.g. a unique client assertion), prepared before the run. */
  nextBody?: () => string;
  connections?: number;
  durationSeconds?: number;
  /** Fixed total request rate (for latency at a given load); unset = as fast as possible. */
  overallRate?: number;
}

/** Runs autocannon against a loopback URL, bounded in time. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: options.url,
    method: options.method ?? 'GET',
    headers: options.headers,
    connections: options.connections ?? 32,
    duration: options.durationSeconds ?? 10,
    overallRate: options.overallRate,
    requests: options.nextBody ? [{ setupRequest: (request: Record<string, unknown>) => ({ ...request, body: options.nextBody!() }) }] : undefined,
  } as autocannon.Options);
  return {
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}
