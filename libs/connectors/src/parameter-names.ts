/**
 * How upstream frameworks may read a name the gateway checked: Go's `encoding/json` and
 * ASP.NET bind JSON members and query parameters ignoring case (Unicode simple folding, so
 * `ſ` is `s` and the Kelvin sign `K` is `k`); PHP trims leading spaces from parameter names,
 * turns `.` and spaces into `_`, and reads `name[...]` as `name`; Rails and Rack read
 * `name[]` and `name[key]` as `name` too. The gateway compares names in these forms so that
 * two names one of those parsers would merge are never both let through.
 */

/** `name` with case folded: upper- then lower-cased, so `ſ`, `K` (Kelvin) and `İ` meet their ASCII forms. */
export function foldCase(name: string): string {
  return name.toUpperCase().toLowerCase();
}

/**
 * A parameter or member name as a lenient framework may read it: leading spaces trimmed, a
 * `[...]` suffix removed, `.` and spaces as `_`, case folded.
 */
export function normalParameterName(name: string): string {
  const trimmed = name.replace(/^[ ]+/, '');
  const bracket = trimmed.indexOf('[');
  const base = bracket >= 0 ? trimmed.slice(0, bracket) : trimmed;
  return foldCase(base.replace(/[. ]/g, '_'));
}
