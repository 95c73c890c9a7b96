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
