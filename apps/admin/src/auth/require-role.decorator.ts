import { SetMetadata } from '@nestjs/common';
import type { AdminRole } from './admin-role';

/** Metadata key of {@link RequireRole}. */
export const REQUIRED_ROLE = 'writ:admin-required-role';

/**
 * The least role an endpoint needs. Without it, reads (GET, HEAD) need `viewer` and
 * anything else needs `admin`: an endpoint someone forgot to mark fails closed.
 */
export const RequireRole = (role: AdminRole) => SetMetadata(REQUIRED_ROLE, role);
