export * from './upstream-credential';
export * from './path-template';
export * from './validate-connector-definition';
export * from './upstream-destination';
export * from './upstream-headers';
export * from './upstream-dispatcher';
