import { ValidateBy, ValidationOptions } from 'class-validator';

// C0 controls and DEL: a line break or a terminal escape in a name misleads whoever reads a listing.
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Why `value` cannot be a name people read in listings (an agent, an orchestrator, an admin token), or `undefined`. */
export function displayNameProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined; // @IsString reports it
  if (value.trim().length === 0) return 'must not be blank';
  if (CONTROL.test(value)) return 'must not contain control characters';
  return undefined;
}

/**
 * A name shown to people: not blank (`"   "` reads as no name at all beside another) and
 * without control characters, the rule connector names already follow.
 */
export function IsDisplayName(options?: ValidationOptions): PropertyDecorator {
  return ValidateBy(
    {
      name: 'isDisplayName',
      validator: {
        validate: (value: unknown) => displayNameProblem(value) === undefined,
        defaultMessage: (args) => `${args?.property ?? 'name'} ${displayNameProblem(args?.value) ?? 'is not a valid name'}`,
      },
    },
    options,
  );
}
