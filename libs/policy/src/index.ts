export { ActivePolicy, type ActivePolicyOptions, type PolicyReloadEvent } from './active-policy';
export { buildPolicyInput, type PolicyFacts } from './build-policy-input';
export { canonicalJson } from './canonical-json';
export { denyDecision, normalizeDecision, type Decision } from './decision';
export { DEFAULT_POLICY_RELATIVE_PATH, defaultPolicyPath, repositoryRoot } from './default-policy';
export { DEFAULT_ENTRYPOINT, policyVersion, readPolicyBundle, readPolicyFile, type PolicyBundle } from './policy-bundle';
export { evaluateFailClosed, PolicyEngine, type PolicyEngineOptions } from './policy-engine';
export { PolicyEvaluationError, PolicyLoadError, type PolicyLoadErrorCode } from './policy-errors';
export type { ConnectorAuthorizationDetail, PolicyConnector, PolicyInput, PolicyOperation, PolicyOperationConstraint } from './policy-input';
