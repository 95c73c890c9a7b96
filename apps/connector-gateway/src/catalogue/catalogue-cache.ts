import { Injectable } from '@nestjs/common';
import { compilePathTemplate, foldCase, matchPathTemplate, mostSpecificTemplate, PathTemplate } from '@writ/connectors';
import type { ConnectorOperation } from '@writ/database';

interface CompiledOperation {
  operation: ConnectorOperation;
  template: PathTemplate;
  /** Per segment of the template: its literal case folded, or undefined for a parameter (see {@link lenientReadings}). */
  folded: Array<string | undefined>;
}

interface CompiledCatalogue {
  text: string;
  operations: CompiledOperation[];
}

/**
 * The outcome of matching a request against a catalogue. `lenient`: the request matches one
 * operation exactly, and the others named as a lenient router reads its segments.
 */
export type OperationMatch =
  | { kind: 'matched'; operation: ConnectorOperation; pathParams: Record<string, string> }
  | { kind: 'none' }
  | { kind: 'ambiguous'; names: string[]; lenient?: true };

/**
 * The readings of a request segment a router may compare with a literal: case folded (ASP.NET
 * routes ignore case), without `;parameters` (Tomcat and Spring strip them before mapping), and
 * for the last segment also without a `.format` suffix (Rails' `(.:format)`, Spring's suffix
 * patterns; a trailing dot too).
 */
function lenientReadings(segment: string, last: boolean): string[] {
  const base = foldCase(segment.split(';')[0]);
  const dot = base.lastIndexOf('.');
  return last && dot > 0 ? [base, base.slice(0, dot)] : [base];
}

/**
 * Compiled operation catalogues, keyed by connector and recompiled whenever the stored
 * catalogue text changes (it is read with every call, so an admin change applies at once).
 */
@Injectable()
export class CatalogueCache {
  private readonly compiled = new Map<string, CompiledCatalogue>();

  /**
   * Matches a method and decoded path segments to exactly one operation. When several templates
   * match, the most specific wins (literal segments before parameters: `GET /items/export` is
   * `/items/export`, not `/items/{id}`), whatever their order in the catalogue; when none of
   * them is more specific than all the others (a catalogue the admin API refuses), the request
   * is ambiguous.
   */
  match(connectorId: string, operationsText: string, method: string, segments: readonly string[]): OperationMatch {
    const catalogue = this.catalogue(connectorId, operationsText);
    const found: Array<{ compiled: CompiledOperation; pathParams: Record<string, string> }> = [];
    for (const compiled of catalogue.operations) {
      if (compiled.operation.method !== method) continue;
      const pathParams = matchPathTemplate(compiled.template, segments);
      if (pathParams) found.push({ compiled, pathParams });
    }
    if (found.length === 0) return { kind: 'none' };
    const chosen = mostSpecificTemplate(found.map((entry) => entry.compiled.template));
    if (chosen === undefined) return { kind: 'ambiguous', names: found.map((entry) => entry.compiled.operation.name).sort() };
    const { compiled, pathParams } = found[chosen];
    // `{id}` takes `export;x`, `EXPORT` and `export.json` where the upstream's router may find
    // the literal `/export` of another operation: the checked operation would not be the one run.
    // The operations that match exactly are less specific than the one chosen: not compared.
    const others = catalogue.operations.filter(
      (candidate) =>
        candidate.operation.method === method && candidate.folded.length === segments.length && !found.some((entry) => entry.compiled === candidate),
    );
    if (others.length > 0) {
      // Each segment read once for every operation compared (literals were folded at compile time).
      const readings = segments.map((segment, index) => lenientReadings(segment, index === segments.length - 1));
      const lenient = others.filter(({ folded }) =>
        folded.every((literal, index) => (literal === undefined ? segments[index] !== '' : readings[index].includes(literal))),
      );
      if (lenient.length > 0) {
        return { kind: 'ambiguous', names: [compiled.operation.name, ...lenient.map(({ operation }) => operation.name).sort()], lenient: true };
      }
    }
    return { kind: 'matched', operation: compiled.operation, pathParams };
  }

  private catalogue(connectorId: string, text: string): CompiledCatalogue {
    const cached = this.compiled.get(connectorId);
    if (cached && cached.text === text) return cached;
    const operations: CompiledOperation[] = [];
    for (const operation of JSON.parse(text) as ConnectorOperation[]) {
      try {
        const template = compilePathTemplate(operation.path);
        const folded = template.segments.map((segment) => ('literal' in segment ? foldCase(segment.literal) : undefined));
        operations.push({ operation: { ...operation, method: operation.method.toUpperCase() }, template, folded });
      } catch {
        // An operation whose path cannot be compiled matches nothing (the admin API refuses them).
      }
    }
    const compiled = { text, operations };
    this.compiled.set(connectorId, compiled);
    return compiled;
  }
}
