import { InitialSchema1764340000000 } from './1764340000000-initial-schema';

export { AUDIT_GENESIS_HASH } from './1764340000000-initial-schema';

/** Every migration, in order. */
export const MIGRATIONS = [InitialSchema1764340000000];
