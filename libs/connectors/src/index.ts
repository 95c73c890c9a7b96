export * from './upstream-credential';
export * from './path-template';
export * from './connector-definition.schema';
export * from './validate-connector-definition';
export * from './upstream-destination';
export * from './upstream-headers';
export * from './upstream-dispatcher';
export * from './parameter-names';
