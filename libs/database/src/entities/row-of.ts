/** `createdAt` → `created_at`: a property name as its column is named. */
type SnakeCase<S extends string> = S extends `${infer Head}${infer Tail}`
  ? `${Head extends Lowercase<Head> ? Head : `_${Lowercase<Head>}`}${SnakeCase<Tail>}`
  : S;

/**
 * A row of an entity's table as `pg` returns it: the entity's columns under their snake_case
 * names, with the entity's types. The entities are the one typed schema: hand-tuned SQL types
 * its rows with `pool.query<RowOf<TaskEntity>>(...)` (or a `Pick` of it) instead of `any`.
 */
export type RowOf<Entity> = { [Key in keyof Entity as Key extends string ? SnakeCase<Key> : never]: Entity[Key] };

/** `createdAt` → `created_at` at run time, as {@link SnakeCase} does for the type. */
function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

/**
 * An entity loaded through a TypeORM repository as the row `pg` would have returned
 * ({@link RowOf}), so that the mappers of hand-written rows serve repository reads too.
 */
export function rowOf<Entity extends object>(entity: Entity): RowOf<Entity> {
  const row: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(entity)) row[snakeCase(key)] = value;
  return row as RowOf<Entity>;
}
