import { plainToInstance } from 'class-transformer';
import { IsString, validateSync } from 'class-validator';
import { displayNameProblem, IsDisplayName } from './display-name.validator';

class Named {
  @IsString() @IsDisplayName() name!: string;
}

const messagesOf = (name: unknown) => validateSync(plainToInstance(Named, { name })).flatMap((error) => Object.values(error.constraints ?? {}));

describe('IsDisplayName', () => {
  it.each(['Invoice agent', 'ci-deployer', 'Agent ünd Ω', ' padded '])('accepts %p', (name) => {
    expect(messagesOf(name)).toEqual([]);
  });

  it.each([
    ['   ', 'name must not be blank'],
    ['\u3000', 'name must not be blank'],
    ['a\nb', 'name must not contain control characters'],
    ['a\u001b[31mred', 'name must not contain control characters'],
    ['a\u007f', 'name must not contain control characters'],
  ])('refuses %p', (name, message) => {
    expect(messagesOf(name)).toEqual([message]);
  });

  it('leaves other types to @IsString', () => {
    expect(displayNameProblem(5)).toBeUndefined();
  });
});
