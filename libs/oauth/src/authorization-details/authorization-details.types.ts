/** The one `authorization_details` type Writ defines (RFC 9396 §2). */
export const CONNECTOR_DETAIL_TYPE = 'connector';

/** Connector identifiers: lowercase, 1 to 64 characters, safe in a URL path segment. */
export const CONNECTOR_ID_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

/** The value a grant gives a named constraint (JSON only: no NaN, no Infinity, no objects). */
export type ConstraintValue = string | number | boolean | Array<string | number>;

/** How a constraint compares a request field with its granted value. */
export type ConstraintOperator = 'eq' | 'lte' | 'gte' | 'in';

/** Every {@link ConstraintOperator}. */
export const CONSTRAINT_OPERATORS: readonly ConstraintOperator[] = Object.freeze(['eq', 'lte', 'gte', 'in']);

/** One `authorization_details` entry of type `connector` (RFC 9396), as requested or granted. */
export interface ConnectorAuthorizationDetail {
  type: 'connector';
  /** The connector's identifier, matching {@link CONNECTOR_ID_PATTERN}. */
  connector: string;
  /** Operation names of the connector's catalogue; non-empty, unique. */
  actions: string[];
  /** Constraint name → granted value; the operator comes from the connector's catalogue. */
  constraints?: Record<string, ConstraintValue>;
  /** RFC 9396 §2.2 common member; informational in Writ (the token's `aud` is the connector). */
  locations?: string[];
}

/**
 * The connector catalogue's operator for a constraint of one operation, or `undefined`
 * when that operation has no constraint of that name.
 */
export type ConstraintOperatorLookup = (connector: string, action: string, constraintName: string) => ConstraintOperator | undefined;
