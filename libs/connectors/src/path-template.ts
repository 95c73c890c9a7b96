/** A compiled catalogue path such as `/repos/{owner}/{repo}/issues`. */
export interface PathTemplate {
  readonly source: string;
  /** The parameter names, in order. */
  readonly params: readonly string[];
  /** Number of segments (a request with another count never matches). */
  readonly segments: readonly PathSegment[];
}

type PathSegment = { literal: string } | { param: string };

/** Why a path template is not acceptable (admin API field error). */
export class PathTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PathTemplateError';
  }
}

const LITERAL = /^[A-Za-z0-9._~!$&'()*+,;=:@-]+$/;
const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/**
 * Compiles a catalogue path: it starts with `/`, its segments are non-empty, and each is a
 * literal or one whole `{param}`. `.`/`..` segments, `%` escapes, `?` and `#` are refused, so
 * that a template can only ever match one normalised path shape.
 */
export function compilePathTemplate(source: string): PathTemplate {
  if (typeof source !== 'string' || !source.startsWith('/')) throw new PathTemplateError('must start with /');
  if (source.length > 512) throw new PathTemplateError('must be at most 512 characters');
  const raw = source === '/' ? [] : source.slice(1).split('/');
  const segments: PathSegment[] = [];
  const params: string[] = [];
  for (const segment of raw) {
    const param = PARAM.exec(segment);
    if (param) {
      if (params.includes(param[1])) throw new PathTemplateError(`parameter {${param[1]}} appears twice`);
      params.push(param[1]);
      segments.push({ param: param[1] });
      continue;
    }
    if (segment === '' || segment === '.' || segment === '..' || !LITERAL.test(segment)) {
      throw new PathTemplateError(`segment "${segment}" is not a literal or a whole {parameter}`);
    }
    segments.push({ literal: segment });
  }
  return { source, params, segments };
}

/**
 * Matches decoded path segments (already checked by the gateway's normaliser) against a
 * template; returns the parameter values, or `undefined` when it does not match.
 */
export function matchPathTemplate(template: PathTemplate, segments: readonly string[]): Record<string, string> | undefined {
  if (segments.length !== template.segments.length) return undefined;
  const values: Record<string, string> = {};
  for (let index = 0; index < segments.length; index += 1) {
    const expected = template.segments[index];
    const actual = segments[index];
    if ('literal' in expected) {
      if (expected.literal !== actual) return undefined;
    } else {
      if (actual === '') return undefined;
      values[expected.param] = actual;
    }
  }
  return values;
}

/**
 * Whether every path `specific` matches is also matched by `general`: as many segments, and
 * each literal of `general` is the same literal in `specific`. `/items/export` is covered by
 * `/items/{id}`; `/a/{x}` and `/a/{y}` cover each other (one route).
 */
export function templateCovers(general: PathTemplate, specific: PathTemplate): boolean {
  if (general.segments.length !== specific.segments.length) return false;
  return general.segments.every((segment, index) => {
    if (!('literal' in segment)) return true;
    const other = specific.segments[index];
    return 'literal' in other && other.literal === segment.literal;
  });
}

/** Whether some path matches both templates: as many segments, and no position with two different literals. */
export function templatesOverlap(a: PathTemplate, b: PathTemplate): boolean {
  if (a.segments.length !== b.segments.length) return false;
  return a.segments.every((segment, index) => {
    const other = b.segments[index];
    return !('literal' in segment) || !('literal' in other) || segment.literal === other.literal;
  });
}

/**
 * A path both templates match while neither covers the other (literals of each where it has
 * them, `x` elsewhere), or `undefined` when they do not overlap or one covers the other.
 * `/a/{x}/c` and `/a/b/{y}` give `/a/b/c`: no precedence picks one of them.
 */
export function ambiguousPathExample(a: PathTemplate, b: PathTemplate): string | undefined {
  if (!templatesOverlap(a, b) || templateCovers(a, b) || templateCovers(b, a)) return undefined;
  const segments = a.segments.map((segment, index) => {
    const other = b.segments[index];
    return 'literal' in segment ? segment.literal : 'literal' in other ? other.literal : 'x';
  });
  return `/${segments.join('/')}`;
}

/**
 * Of the templates that match one request, the most specific: the one every other covers
 * (literal segments win over parameters, as OpenAPI's "concrete paths before templated paths"
 * and most-specific-route gateways resolve). Its index, or `undefined` when there is none,
 * i.e. two of them are incomparable (a catalogue the admin API refuses). The answer does not
 * depend on the order of `templates`.
 */
export function mostSpecificTemplate(templates: readonly PathTemplate[]): number | undefined {
  const index = templates.findIndex((candidate) => templates.every((other) => templateCovers(other, candidate)));
  if (index < 0) return undefined;
  // Two with the same shape cover each other: no single most specific one.
  const tie = templates.some((other, at) => at !== index && templateCovers(templates[index], other));
  return tie ? undefined : index;
}

/**
 * The template with parameter `param` replaced by the literal `value`, or `undefined` when
 * `value` cannot be one path segment (the gateway reads each segment as a whole).
 */
export function withParameterValue(template: PathTemplate, param: string, value: string): PathTemplate | undefined {
  if (!template.params.includes(param) || value === '' || value === '.' || value === '..' || !LITERAL.test(value)) return undefined;
  return {
    source: template.source,
    params: template.params.filter((name) => name !== param),
    segments: template.segments.map((segment) => ('param' in segment && segment.param === param ? { literal: value } : segment)),
  };
}
