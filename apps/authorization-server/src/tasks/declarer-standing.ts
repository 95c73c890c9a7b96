import type { DeclarerStanding } from '@writ/grants';
import { InvalidTokenError } from '@writ/oauth';
import { FieldError, ValidationFailedError } from '@writ/platform';

/**
 * Why an orchestrator allowed `allowedAgents` may not declare a task for `agentId`, whose status
 * is `agentStatus` (`null`: no such agent): the `agent_id` field errors of the Tasks API.
 */
export function agentFieldErrors(allowedAgents: readonly string[], agentId: string, agentStatus: string | null): FieldError[] {
  const fields: FieldError[] = [];
  if (!allowedAgents.includes('*') && !allowedAgents.includes(agentId)) {
    fields.push({ field: 'agent_id', message: 'this orchestrator may not create tasks for that agent' });
  }
  if (agentStatus === null) fields.push({ field: 'agent_id', message: 'no such agent' });
  else if (agentStatus !== 'active') fields.push({ field: 'agent_id', message: 'the agent is suspended' });
  return fields;
}

/**
 * The answer a fresh request would get, when what the declaration was checked on no longer
 * holds at its commit (`undefined` when it all still holds): `401 invalid_token` as from the
 * Tasks API guard when the token was revoked or expired, or the orchestrator suspended or
 * deleted (which revokes its tokens); `400` naming `agent_id`, as from the create, when the agent
 * left `allowed_agents`, was suspended or was deleted.
 */
export function declarerRefusal(standing: DeclarerStanding, agentId: string): Error | undefined {
  if (standing.orchestratorStatus !== 'active' || standing.token === 'revoked' || standing.token === 'unknown') {
    return new InvalidTokenError('the access token has been revoked');
  }
  if (standing.token === 'expired') return new InvalidTokenError('the access token is invalid or expired');
  const fields = agentFieldErrors(standing.allowedAgents, agentId, standing.agentStatus);
  return fields.length > 0 ? new ValidationFailedError(fields, 'the task declaration is invalid') : undefined;
}
