/** The symbol Node.js's `util.inspect` (hence `console.log`) calls for a custom view. */
export const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/** A copy of `value`'s own members with the named ones replaced by `[redacted]`. */
export function redactedView(value: object, secrets: readonly string[]): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const [name, member] of Object.entries(value)) view[name] = secrets.includes(name) ? '[redacted]' : member;
  return view;
}

/**
 * Makes `JSON.stringify(value)`, `console.log(value)` and `util.inspect(value)` show
 * `[redacted]` for the named members (tokens), which stay readable as properties: a
 * credential logged by mistake does not leak. Both hooks are non-enumerable.
 */
export function hideSecrets<T extends object>(value: T, secrets: readonly (keyof T & string)[]): T {
  const view = () => redactedView(value, secrets);
  Object.defineProperty(value, 'toJSON', { value: view, enumerable: false });
  Object.defineProperty(value, INSPECT, { value: view, enumerable: false });
  return value;
}
