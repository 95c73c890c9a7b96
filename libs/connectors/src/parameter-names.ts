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

/**
 * The names PHP may register `name` as (`php_register_variable_ex`): up to its first NUL, leading
 * spaces trimmed, `.` and spaces as `_`; from the first `[`, a `[...]` suffix removed, or, with no
 * `]` after it, that `[` as `_` (PHP 8 also turns every later `.`, space or `[` into `_`, PHP 7
 * does not); case folded.
 */
function phpParameterNames(name: string): string[] {
  const nul = name.indexOf('\u0000');
  const trimmed = (nul >= 0 ? name.slice(0, nul) : name).replace(/^[ ]+/, '');
  const bracket = trimmed.indexOf('[');
  if (bracket < 0) return [foldCase(trimmed.replace(/[. ]/g, '_'))];
  const head = trimmed.slice(0, bracket).replace(/[. ]/g, '_');
  if (trimmed.indexOf(']', bracket) >= 0) return [foldCase(head)];
  const rest = trimmed.slice(bracket + 1);
  return [foldCase(`${head}_${rest.replace(/[. []/g, '_')}`), foldCase(`${head}_${rest}`)];
}

/**
 * Every name an upstream framework may read `name` as: {@link normalParameterName}'s, and PHP's
 * where they differ (after a NUL, an unclosed `[`).
 */
export function parameterNameForms(name: string): string[] {
  return [...new Set([normalParameterName(name), ...phpParameterNames(name)])];
}

/** True when some framework may read `a` and `b` as one parameter (their {@link parameterNameForms} meet). */
export function sameParameterName(a: string, b: string): boolean {
  const forms = parameterNameForms(b);
  return parameterNameForms(a).some((form) => forms.includes(form));
}
