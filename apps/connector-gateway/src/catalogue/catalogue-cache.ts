import { Injectable } from '@nestjs/common';
import { compilePathTemplate, matchPathTemplate, PathTemplate } from '@writ/connectors';
import type { ConnectorOperation } from '@writ/database';

interface CompiledOperation {
  operation: ConnectorOperation;
  template: PathTemplate;
}

interface CompiledCatalogue {
  text: string;
  operations: CompiledOperation[];
}

/** The outcome of matching a request against a catalogue. */
export type OperationMatch =
  { kind: 'matched'; operation: ConnectorOperation; pathParams: Record<string, string> } | { kind: 'none' } | { kind: 'ambiguous'; names: string[] };

/**
 * Compiled operation catalogues, keyed by connector and recompiled whenever the stored
 * catalogue text changes (it is read with every call, so an admin change applies at once).
 */
@Injectable()
export class CatalogueCache {
  private readonly compiled = new Map<string, CompiledCatalogue>();

  /** Matches a method and decoded path segments to exactly one operation. */
  match(connectorId: string, operationsText: string, method: string, segments: readonly string[]): OperationMatch {
    const catalogue = this.catalogue(connectorId, operationsText);
    const found: Array<{ operation: ConnectorOperation; pathParams: Record<string, string> }> = [];
    for (const { operation, template } of catalogue.operations) {
      if (operation.method !== method) continue;
      const pathParams = matchPathTemplate(template, segments);
      if (pathParams) found.push({ operation, pathParams });
    }
    if (found.length === 0) return { kind: 'none' };
    if (found.length > 1) return { kind: 'ambiguous', names: found.map((entry) => entry.operation.name) };
    return { kind: 'matched', ...found[0] };
  }

  private catalogue(connectorId: string, text: string): CompiledCatalogue {
    const cached = this.compiled.get(connectorId);
    if (cached && cached.text === text) return cached;
    const operations: CompiledOperation[] = [];
    for (const operation of JSON.parse(text) as ConnectorOperation[]) {
      try {
        operations.push({ operation: { ...operation, method: operation.method.toUpperCase() }, template: compilePathTemplate(operation.path) });
      } catch {
        // An operation whose path cannot be compiled matches nothing (the admin API refuses them).
      }
    }
    const compiled = { text, operations };
    this.compiled.set(connectorId, compiled);
    return compiled;
  }
}
