/**
 * Error descriptions go back to the caller and into audit events, so anything taken from
 * a request is rendered here first: printable ASCII only (no header injection, no
 * terminal escapes), short, and never a parameter value that could be a credential.
 */

const MAX_LENGTH = 64;

/** Renders a request-supplied identifier (a parameter name, a type, an action) for a description. */
export function safeToken(value: string, maxLength: number = MAX_LENGTH): string {
  const printable = value.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > maxLength ? `${printable.slice(0, maxLength)}...` : printable;
}

/** Like {@link safeToken}, wrapped in double quotes with inner double quotes replaced. */
export function quoteToken(value: string, maxLength: number = MAX_LENGTH): string {
  return `"${safeToken(value, maxLength).replace(/"/g, "'")}"`;
}
