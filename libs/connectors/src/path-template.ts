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
