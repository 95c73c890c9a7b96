// Lint of the TypeScript tree (apps, libs, test, bench, scripts, packages/sdk) with
// typescript-eslint's type-aware rules: no `any` flowing out of a query, no floating promise.
// Formatting is prettier's (`npm run format:check`), not lint's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['**/dist/**', 'node_modules/**', 'sdk/python/**', 'coverage/**', '.tmp/**', '**/*.js', '**/*.mjs', '**/*.cjs'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Unused names are the compiler's job (noUnusedLocals, noUnusedParameters).
      '@typescript-eslint/no-unused-vars': 'off',
      // Nest's decorated classes and the SDK's overloads use empty and namespace forms on purpose.
      '@typescript-eslint/no-extraneous-class': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/consistent-type-imports': 'off',
      // Input checks reject control characters on purpose.
      'no-control-regex': 'off',
      // An abort rejects with the signal's reason, whatever the caller aborted with (DOM semantics).
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
    },
  },
  {
    // The console (Preact): event handlers may be async, their errors are shown by the handler itself.
    files: ['apps/admin/console/**/*.{ts,tsx}'],
    rules: {
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { attributes: false } }],
    },
  },
  {
    // Libraries never import apps (docs/architecture.md).
    files: ['libs/**/*.ts', 'packages/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/apps/**'], message: 'a library never imports an app' }] }],
    },
  },
  {
    // The suites and the demo walk JSON answers (`response.body`) and fixture rows as they come,
    // and assert their shape with expect(): there `any` is the honest type. Production code has
    // no such exception.
    files: ['test/**/*.ts', '**/*.spec.ts', 'scripts/demo.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
