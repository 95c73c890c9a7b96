/** The roles of admin tokens, from least to most powerful. */
export const ADMIN_ROLES = ['viewer', 'operator', 'admin'] as const;

/** An admin token's role: `viewer` reads; `operator` also changes identities, connectors and tasks; `admin` also keys, policies and admin tokens. */
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** True when `held` grants at least what `required` does. */
export function roleSatisfies(held: AdminRole, required: AdminRole): boolean {
  return ADMIN_ROLES.indexOf(held) >= ADMIN_ROLES.indexOf(required);
}

/** True for a known role name. */
export function isAdminRole(value: unknown): value is AdminRole {
  return typeof value === 'string' && (ADMIN_ROLES as readonly string[]).includes(value);
}
