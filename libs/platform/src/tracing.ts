import { Attributes, Context, context, Link, propagation, Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Sampler, SamplingResult } from '@opentelemetry/sdk-trace-node';
import type { NextFunction, Request, Response } from 'express';
import type { Pool } from 'pg';
import type { Logger } from 'pino';
import { loggablePath, requestPath } from './request-values';
import type { WritConfig } from '@writ/config';
import { observePolicyEvaluations } from '@writ/policy';

/**
 * OpenTelemetry tracing, off unless the standard `OTEL_*` variables ask for it (see
 * `TracingConfig`). Off, nothing here is installed: no SDK loaded, no middleware, no wrapped
 * pool, so the hot paths pay nothing. On: a server span per request (continuing the caller's
 * `traceparent`), spans for policy evaluations, queries of the request pool, audit commits and
 * upstream calls, exported over OTLP/HTTP in batches.
 */
let enabled = false;

/** True once {@link startTracing} installed the SDK. */
export function tracingEnabled(): boolean {
  return enabled;
}

const tracer = () => trace.getTracer('writ');

/** Starts the SDK when configured; returns its shutdown (flushes pending spans), or undefined when off. */
export async function startTracing(config: WritConfig, service: string, logger: Logger): Promise<(() => Promise<void>) | undefined> {
  if (!config.tracing.enabled || enabled) return undefined;
  const { NodeTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } = await import('@opentelemetry/sdk-trace-node');
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  const serviceName = config.tracing.serviceName ?? (service === 'writ' ? 'writ' : `writ-${service}`);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName }),
    // Spans within a request follow its server span; the server span is sampled from its trace id alone.
    sampler: new CallerFlagIgnored(new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.tracing.sampleRatio) })),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: config.tracing.endpoint }))],
  });
  // Global tracer provider, W3C trace-context propagator and AsyncLocalStorage context.
  provider.register();
  enabled = true;
  const stopObserving = observePolicyEvaluations((seconds) => retroactiveSpan('policy.evaluate', seconds));
  logger.info({ service_name: serviceName }, 'OpenTelemetry tracing on');
  return async () => {
    stopObserving();
    await provider.shutdown().catch(() => undefined);
    trace.disable();
    propagation.disable();
    context.disable();
    enabled = false;
  };
}

/**
 * Samples a span whose parent is a caller's (`traceparent` of a request) as a new trace's root:
 * the trace is continued (same trace id), but the caller's sampled flag decides nothing. Obeyed,
 * an agent could switch tracing off for its own calls (`-00`), or force every one of them traced
 * past the operator's ratio (`-01`). One span context read per server span.
 */
class CallerFlagIgnored implements Sampler {
  constructor(private readonly sampler: Sampler) {}

  shouldSample(parent: Context, traceId: string, name: string, kind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    const remote = trace.getSpanContext(parent)?.isRemote === true;
    return this.sampler.shouldSample(remote ? trace.deleteSpan(parent) : parent, traceId, name, kind, attributes, links);
  }

  toString(): string {
    return `CallerFlagIgnored{${this.sampler.toString()}}`;
  }
}

/** A span that already happened (ended now, `seconds` long), child of the active span. */
export function retroactiveSpan(name: string, seconds: number, attributes: Record<string, string | number> = {}): void {
  if (!enabled) return;
  const end = Date.now();
  tracer()
    .startSpan(name, { startTime: end - seconds * 1000, attributes })
    .end(end);
}

/** Express middleware: one server span per request, continuing the caller's trace. Install only when {@link tracingEnabled}. */
export function tracingMiddleware(service: string): (req: Request, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    const parent = propagation.extract(context.active(), req.headers);
    const span = tracer().startSpan(
      `${req.method} ${service}`,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': req.method, 'url.path': loggablePath(requestPath(req)), 'writ.service': service } },
      parent,
    );
    res.once('finish', () => {
      span.setAttribute('http.response.status_code', res.statusCode);
      if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    });
    context.with(trace.setSpan(parent, span), next);
  };
}

/** Runs `work` in a span of its own when tracing is on (as it is, otherwise). */
export async function inSpan<T>(name: string, attributes: Record<string, string | number>, work: () => Promise<T>, kind = SpanKind.INTERNAL): Promise<T> {
  if (!enabled) return work();
  const span: Span = tracer().startSpan(name, { kind, attributes });
  try {
    return await context.with(trace.setSpan(context.active(), span), work);
  } catch (error) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
    throw error;
  } finally {
    span.end();
  }
}

/**
 * The trace headers of an upstream request: with `forward` false, none (the agent's
 * `traceparent`/`tracestate` are removed); with tracing on, the active span's (replacing the
 * agent's); otherwise the agent's as received.
 */
export function withTraceContext(headers: Record<string, string>, forward: boolean): Record<string, string> {
  if (!forward) {
    delete headers.traceparent;
    delete headers.tracestate;
    return headers;
  }
  if (enabled) propagation.inject(context.active(), headers);
  return headers;
}

/** Wraps `pool.query` in client spans (statement text cut to 200 characters). Only when tracing is on. */
export function traceQueries(pool: Pool): void {
  if (!enabled) return;
  const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
  (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const first = args[0];
    const text = typeof first === 'string' ? first : typeof (first as { text?: unknown })?.text === 'string' ? (first as { text: string }).text : 'query';
    const span = tracer().startSpan('pg.query', { kind: SpanKind.CLIENT, attributes: { 'db.system': 'postgresql', 'db.query.text': text.slice(0, 200) } });
    const result = context.with(trace.setSpan(context.active(), span), () => query(...args));
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<unknown>).then(
        () => span.end(),
        (error: unknown) => {
          span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
          span.end();
        },
      );
    } else {
      span.end();
    }
    return result;
  };
}
