export * from './upstream-credential';
export * from './path-template';
export * from './validate-connector-definition';
