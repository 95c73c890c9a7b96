import { AsyncLocalStorage } from 'node:async_hooks';

/** What the code serving a request may need to know about it, wherever it runs. */
export interface RequestContext {
  /** The caller's `X-Request-Id`, when it sent a well-formed one. */
  callerRequestId?: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** Runs `work` (the rest of the request's handling) with `context`. */
export function runWithRequestContext<T>(context: RequestContext, work: () => T): T {
  return storage.run(context, work);
}

/** The context of the request being served, if any. */
export function currentRequestContext(): RequestContext | undefined {
  return storage.getStore();
}
