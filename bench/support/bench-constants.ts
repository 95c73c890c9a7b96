/** The upstream credential the gateway benchmark's mock upstream demands. */
export const BENCH_UPSTREAM_SECRET = 'sk_bench_upstream_secret';
