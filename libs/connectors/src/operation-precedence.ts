import { compilePathTemplate, PathTemplate, templateCovers } from './path-template';

/** An `http` operation as precedence reads it (tools have no method or path: ignored). */
export interface RoutedOperation {
  name: string;
  method?: string;
  path?: string;
}

interface Routed {
  name: string;
  method: string;
  template: PathTemplate;
}

function routed(operations: readonly RoutedOperation[]): Routed[] {
  const out: Routed[] = [];
  for (const operation of operations) {
    if (typeof operation.method !== 'string' || typeof operation.path !== 'string') continue;
    try {
      out.push({ name: operation.name, method: operation.method.toUpperCase(), template: compilePathTemplate(operation.path) });
    } catch {
      // A path that does not compile matches nothing at the gateway.
    }
  }
  return out;
}

/** Whether `rival` takes some of `operation`'s paths: same method, strictly more specific. */
function shadows(rival: Routed, operation: Routed): boolean {
  return rival.method === operation.method && templateCovers(operation.template, rival.template) && !templateCovers(rival.template, operation.template);
}

/**
 * The operations of `after` that reach paths they did not reach in `before`, because a more
 * specific operation of the same method that took them is gone or moved: without
 * `GET /items/export`, `GET /items/{id}` now runs for `/items/export`. Credentials issued for
 * them were decided on a narrower operation (an operation whose own method or path changed is
 * found by comparing it with itself, not here).
 */
export function widenedOperations(before: readonly RoutedOperation[], after: readonly RoutedOperation[]): string[] {
  const old = routed(before);
  const now = routed(after);
  const widened: string[] = [];
  for (const operation of now) {
    const previous = old.find((candidate) => candidate.name === operation.name);
    if (!previous || previous.method !== operation.method || previous.template.source !== operation.template.source) continue;
    // Each path an old rival took still goes to some rival now only if one covers it whole.
    const lost = old.some(
      (rival) => shadows(rival, previous) && !now.some((candidate) => shadows(candidate, operation) && templateCovers(candidate.template, rival.template)),
    );
    if (lost) widened.push(operation.name);
  }
  return widened;
}
